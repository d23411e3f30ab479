"""VESSA Train: train VESSA and semi-supervised students on scene data (module metadata and self-test)."""

import numpy as np
import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)


class VESSATrain(ScriptedLoadableModule):
    """Module metadata; the logic lives in VESSATrainLib.

    Depends on VESSASegment: scene volumes and segmentations are read with
    `VESSASegmentLib.scene_io`, which is importable because both modules install into the
    same qt-scripted-modules folder.
    """

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("VESSA Train")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["VESSASegment"]
        self.parent.contributors = ["VESSA for 3D Slicer developers"]
        self.parent.helpText = _(
            "Trains the VESSA segmentation assistant on labelled volumes of the scene (stage 1) and uses "
            "it to train a segmentation network on unlabelled ones (stage 2, semi-supervised). Pick "
            "volume + segmentation pairs, unlabelled volumes, the segment names to learn and an output "
            "folder, then Start: the cohort is exported there and training runs in a background "
            "process. Cancel keeps the last checkpoint, Resume continues from it, also after a restart. "
            "A finished stage 1 appears in the checkpoint list of the VESSA segment editor effect."
        )
        self.parent.acknowledgementText = _(
            "Training follows the two stages of J. Guo et al., <i>Vision-Language Enhanced Foundation "
            "Model for Semi-supervised Medical Image Segmentation</i>, arXiv:2511.19759, 2025, with "
            "UniMatch-V2 as the semi-supervised framework, and offers DuSSS (Q. Pan et al., "
            "arXiv:2412.12492, 2024). It builds on SAM2 (Meta AI), open_clip and MONAI."
        )


class VESSATrainWidget(ScriptedLoadableModuleWidget):
    """The panel (Resources/UI/VESSATrain.ui), wired by VESSATrainLib.widget.TrainWidget."""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from VESSATrainLib.widget import TrainWidget

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/VESSATrain.ui"))
        self.layout.addWidget(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.panel = TrainWidget(uiWidget)

    def enter(self):
        self.panel.enter()

    def cleanup(self):
        self.panel.cleanup()


class VESSATrainTest(ScriptedLoadableModuleTest):
    """The core library imports and a segmentation drawn in Slicer reads back exactly."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_vessa_version()
        self.setUp()
        self.test_read_scene_segmentation()

    def test_vessa_version(self):
        import vessa

        self.assertRegex(vessa.__version__, r"^\d+\.\d+")

    def test_read_scene_segmentation(self):
        """A volume and segment made with Slicer's own API, read through VESSASegmentLib.scene_io."""
        from VESSASegmentLib import scene_io

        ijk_to_ras = np.array(
            [[0.0, -0.8, 0.0, 12.0], [-0.6, 0.0, 0.0, 4.0], [0.0, 0.0, 3.0, -7.0], [0, 0, 0, 1]]
        )
        values = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
        volumeNode = slicer.util.addVolumeFromArray(values, ijk_to_ras, "VESSATrainTest volume")
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        segmentId = segmentationNode.GetSegmentation().AddEmptySegment("", "upper half", [0.3, 0.6, 0.9])
        mask = (values >= values.size / 2).astype(np.uint8)
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentationNode, segmentId, volumeNode)

        volume = scene_io.nodeToVolume(volumeNode)
        self.assertTrue(np.array_equal(volume.array, values))
        self.assertTrue(np.allclose(volume.ijk_to_ras(), ijk_to_ras, rtol=0, atol=1e-9))
        segmentation = scene_io.nodeToSegmentation(segmentationNode, volumeNode)
        self.assertEqual(segmentation.names(), ["upper half"])
        self.assertTrue(np.array_equal(segmentation.get("upper half").mask, mask.astype(bool)))
        self.assertTrue(segmentation.geometry().same_grid(volume, atol=1e-9))
        self.delayDisplay("VESSATrain scene reading passed")
