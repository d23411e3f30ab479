"""VESSA Segment: template-guided vision-language segmentation (module metadata, the "VESSA"
Segment Editor effect's registration, the sample data's registration, self-test)."""

import logging
import os

import numpy as np
import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)


class VESSASegment(ScriptedLoadableModule):
    """Module metadata; the logic lives in VESSASegmentLib."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("VESSA Segment")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["VESSA for 3D Slicer developers"]
        self.parent.helpText = _(
            "Template-guided vision-language segmentation with the VESSA model: a structure is "
            "segmented from a few example segmentations (templates) and its name or a short "
            "description. Use it in the Segment Editor: effect <b>VESSA</b>, button "
            "<b>VESSA auto-segment</b>."
        )
        self.parent.acknowledgementText = _(
            "VESSA implements the segmentation assistant of J. Guo, M. Li, H. Su, S. López, L. Fan, "
            "D. Kim and A. Katsaggelos, <i>Vision-Language Enhanced Foundation Model for "
            "Semi-supervised Medical Image Segmentation</i>, arXiv:2511.19759, 2025. It builds on "
            "SAM2 (Meta AI), open_clip and Slicer's segmentation infrastructure."
        )
        slicer.app.connect("startupCompleted()", self.registerEditorEffect)
        slicer.app.connect("startupCompleted()", self.registerSampleData)

    def registerEditorEffect(self):
        """Add the "VESSA" effect (SegmentEditorVESSALib/SegmentEditorEffect.py) to the Segment Editor."""
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        effect = effects.qSlicerSegmentEditorScriptedEffect(None)
        path = os.path.join(os.path.dirname(__file__), "SegmentEditorVESSALib", "SegmentEditorEffect.py")
        effect.setPythonSource(path.replace("\\", "/"))
        effect.self().register()

    def registerSampleData(self):
        """Add VESSA's sample sets to the Sample Data module (category "VESSA")."""
        try:
            from VESSASegmentLib.sample_data import SampleDataRegistration

            SampleDataRegistration().register()
        except ImportError as error:  # vessa's dependencies are not installed yet
            logging.info("VESSA sample data not registered: %s", error)


class VESSASegmentWidget(ScriptedLoadableModuleWidget):
    """The module panel: help and acknowledgement (and Reload & Test in developer mode)."""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.layout.addStretch(1)


class VESSASegmentTest(ScriptedLoadableModuleTest):
    """The core library imports and volumes/segmentations cross the scene boundary exactly."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_vessa_imports()
        self.setUp()
        self.test_scene_round_trip()

    def test_vessa_imports(self):
        import vessa
        import vessa.io

        self.assertRegex(vessa.__version__, r"^\d+\.\d+")
        self.assertTrue(hasattr(vessa.io, "Volume"))

    def test_scene_round_trip(self):
        from VESSASegmentLib import scene_io

        from vessa.io import Segmentation, Volume

        angle = 0.4
        direction = np.array(
            [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0, 0, 1]]
        )
        values = np.random.default_rng(0).integers(-1000, 1000, size=(5, 6, 7), dtype=np.int16)
        volume = Volume(values, spacing=(0.7, 0.9, 2.5), origin=(10.0, -20.0, 5.0), direction=direction)
        volumeNode = scene_io.volumeToNode(volume, "VESSASegmentTest volume")
        back = scene_io.nodeToVolume(volumeNode)
        self.assertEqual(back.array.dtype, np.int16)
        self.assertTrue(np.array_equal(back.array, volume.array))
        self.assertTrue(np.allclose(back.ijk_to_lps(), volume.ijk_to_lps(), rtol=0, atol=1e-9))

        segmentation = Segmentation.on_grid(volume)
        segmentation.add("bright", values > 500, (0.9, 0.8, 0.1))
        segmentation.add("positive", values > 0, (0.2, 0.4, 0.9))
        segmentationNode = scene_io.segmentationToNode(
            segmentation, volumeNode, "VESSASegmentTest segments"
        )
        read = scene_io.nodeToSegmentation(segmentationNode, volumeNode)
        self.assertEqual(read.names(), ["bright", "positive"])
        for segment in segmentation.segments:
            self.assertTrue(np.array_equal(read.get(segment.name).mask, segment.mask))
            self.assertTrue(np.allclose(read.get(segment.name).color, segment.color, atol=1e-6))
        self.delayDisplay("VESSASegment scene round trip passed")
