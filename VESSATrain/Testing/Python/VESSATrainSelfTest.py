"""VESSA Train self-test for a real Slicer: the panel, the export, and a real training process.

Run by ctest (slicer_add_python_unittest in VESSATrain/CMakeLists.txt) or from Slicer's Python
console: `import VESSATrainSelfTest; VESSATrainSelfTest.VESSATrainSelfTest().runTest()`.
"""

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import qt
import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

SHAPE = (4, 32, 32)  # (k, j, i)


def add_case(name, offset):
    """A volume with a bright box and a segmentation "blob" of that box, made with Slicer's API."""
    values = np.random.default_rng(offset).normal(size=SHAPE).astype(np.float32)
    mask = np.zeros(SHAPE, np.uint8)
    mask[:, 8 + offset:20 + offset, 10:24] = 1
    values[mask > 0] += 3.0
    ijk_to_ras = np.diag([0.8, 0.8, 2.5, 1.0])
    volume = slicer.util.addVolumeFromArray(values, ijk_to_ras, name)
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{name} segmentation")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segmentId = segmentation.GetSegmentation().AddEmptySegment("", "blob")
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, segmentId, volume)
    return volume, segmentation


class VESSATrainSelfTest(ScriptedLoadableModuleTest):
    """The panel's controls, its refusal of bad input, and a tiny real training job in PythonSlicer."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        for test in (self.test_panel_lists_cases_and_refuses_bad_input,
                     self.test_export_and_train_in_a_background_process):
            self.setUp()
            test()

    def test_panel_lists_cases_and_refuses_bad_input(self):
        from VESSATrainLib.train_parameters import STAGE_CHOICES

        slicer.util.selectModule("VESSATrain")
        panel = slicer.modules.vessatrain.widgetRepresentation().self().panel
        self.assertEqual(panel.ui.stageComboBox.count, len(STAGE_CHOICES))
        volume, segmentation = add_case("case 1", 0)
        panel.ui.labelledVolumeSelector.setCurrentNode(volume)
        panel.ui.labelledSegmentationSelector.setCurrentNode(segmentation)
        panel.ui.unlabelledVolumesSelector.setCheckState(volume, qt.Qt.Unchecked)
        panel.ui.addPairButton.click()
        self.assertEqual(panel.ui.labelledTable.rowCount, 1)
        self.assertEqual(panel.checkedStructures(), ["blob"])

        panel.ui.outputFolderEdit.currentPath = ""
        panel.ui.startButton.click()
        self.assertIn("choose an output folder", panel.ui.messageLabel.text)
        self.assertEqual(panel.logic.state, "idle")
        panel.ui.outputFolderEdit.currentPath = tempfile.mkdtemp()
        panel.ui.stageComboBox.setCurrentIndex(panel.ui.stageComboBox.findData("stage2"))
        panel.ui.startButton.click()  # stage 2 without unlabelled volumes
        self.assertIn("needs unlabelled volumes", panel.ui.messageLabel.text)
        self.assertEqual(panel.logic.state, "idle")
        self.delayDisplay("VESSA Train panel checks passed")

    def test_export_and_train_in_a_background_process(self):
        """Scene -> cohort -> `PythonSlicer -m vessa.cli train` (supervised, CPU) -> events -> checkpoint."""
        from VESSATrainLib.cohort_exporter import CohortExporter
        from VESSATrainLib.job_runner import SubprocessJobRunner
        from VESSATrainLib.progress_model import ProgressModel
        from VESSATrainLib.train_logic import TrainLogic

        from vessa.io import read_volume
        from vessa.jobs import JobSpec, parse_progress_line

        pairs = [add_case("case 1", 0), add_case("case 2", 3)]
        folder = Path(tempfile.mkdtemp())
        export = CohortExporter(folder / "cohort").export(pairs, [], ["blob"])
        manifest = json.loads(export.manifest.read_text())
        self.assertEqual([case["id"] for case in manifest["cases"]], ["case_1", "case_2"])
        image = read_volume(folder / "cohort" / manifest["cases"][0]["image"])
        self.assertTrue(np.array_equal(image.array, slicer.util.arrayFromVolume(pairs[0][0])))

        spec = JobSpec(stage="stage2", method="supervised", manifest=str(export.manifest),
                       output_dir=str(folder / "job"), structures=["blob"], steps=6, batch_size=2, image_size=32,
                       log_every=2, checkpoint_every=3, device="cpu", amp=False, options={"channels": [4, 8]})
        specPath = spec.to_json(folder / "job.json")
        logic = TrainLogic()
        runner = SubprocessJobRunner(parse_progress_line)
        runner.start(logic.argv(specPath, resume=False, gpus=1), env=logic.environment(), cwd=folder)
        progress = ProgressModel(["stage2"])
        deadline = time.monotonic() + 300
        while runner.exit is None and time.monotonic() < deadline:
            for event in runner.poll():
                progress.update(event)
            slicer.app.processEvents(qt.QEventLoop.AllEvents, 100)
        self.assertIsNotNone(runner.exit, "the training process did not end within 5 minutes")
        self.assertEqual(runner.exit.returncode, 0, runner.exit.stderrTail)
        self.assertEqual([points[0] for points in progress.series["stage2"]["loss"]], [2, 4, 6])
        self.assertEqual(progress.doneStages, ["stage2"])
        self.assertTrue(Path(progress.checkpoints["stage2"]).is_file())
        self.delayDisplay("VESSA Train background training passed")
