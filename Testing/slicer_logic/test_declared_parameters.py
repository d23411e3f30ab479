"""Effect and training parameters: declared limits (Slicer's WithinRange / Minimum / Choice),
the last settings kept in QSettings across sessions, and both used on a real (headless) scene."""

from __future__ import annotations

import pytest
from effect_scene import EffectScene, ThresholdPredictor, loader_for
from VESSASegmentLib import scene_io
from VESSASegmentLib.declared_parameters import Choice, Minimum, SettingsStore, WithinRange, declared, violations
from VESSASegmentLib.parameters import SETTINGS_GROUP, Parameters
from VESSASegmentLib.segment_logic import SegmentLogic
from VESSATrainLib.train_parameters import TrainParameters

from vessa.errors import InputError

QtCore = pytest.importorskip("PySide6.QtCore")


def settings_file(path):
    """Qt's settings in an INI file: one object per 'session', like Slicer's user settings."""
    return QtCore.QSettings(str(path), QtCore.QSettings.Format.IniFormat)


def test_limits_are_declared_on_the_fields():
    (threshold,) = declared(Parameters, "threshold")
    assert isinstance(threshold, WithinRange) and (threshold.minimum, threshold.maximum) == (0.0, 1.0)
    assert isinstance(declared(Parameters, "device")[0], Choice) and declared(Parameters, "text") == ()
    (gpus,) = declared(TrainParameters, "gpus")
    assert isinstance(gpus, Minimum) and gpus.minimum == 1
    assert declared(TrainParameters, "budgetUnit")[0].choices == ["steps", "minutes"]


@pytest.mark.parametrize(("parameters", "expected"), [
    (Parameters(), []),
    (Parameters(device="tpu", opacity=1.5), ["device 'tpu' is not one of auto, cpu, cuda",
                                             "opacity 1.5 must be between 0 and 1"]),
    (TrainParameters(outputFolder="job"), []),
    (TrainParameters(gpus=0, budget=0, budgetUnit="hours"),
     ["gpus 0 must be at least 1", "budget 0 must be at least 1",
      "budget unit 'hours' is not one of steps, minutes"]),
])
def test_violations_name_the_value_and_the_limit(parameters, expected):
    assert violations(parameters) == expected
    if expected:
        assert parameters.isValid() == (False, expected[0])


def test_the_last_settings_come_back_in_the_next_session(tmp_path):
    path = tmp_path / "Slicer.ini"
    used = Parameters(text="left lobe", checkpoint="vessa-starter", device="cpu", threshold=0.7, opacity=0.3,
                      fastPass=True, templateSource="bank")
    SettingsStore(SETTINGS_GROUP, settings_file(path)).save(used)
    restored = SettingsStore(SETTINGS_GROUP, settings_file(path)).restore(Parameters())
    assert (restored.checkpoint, restored.device, restored.threshold, restored.opacity, restored.fastPass) == \
        ("vessa-starter", "cpu", 0.7, 0.3, True)
    assert (restored.text, restored.templateSource) == ("", "scene")  # a segment's own, not remembered
    train = TrainParameters(stages="stage2", method="dusss", device="cpu", gpus=2, budget=30, budgetUnit="minutes",
                            outputFolder=str(tmp_path / "job"))
    SettingsStore("VESSA/Train", settings_file(path)).save(train)
    back = SettingsStore("VESSA/Train", settings_file(path)).restore(TrainParameters())
    assert (back.stages, back.method, back.device, back.gpus, back.budget, back.budgetUnit) == \
        ("stage2", "dusss", "cpu", 2, 30, "minutes")
    assert back.outputFolder == ""


def test_a_stored_value_that_is_bad_or_outdated_is_ignored(tmp_path):
    settings = settings_file(tmp_path / "Slicer.ini")
    for name, text in (("device", "tpu"), ("threshold", "high"), ("opacity", "2.5"), ("checkpoint", "mine")):
        settings.setValue(f"{SETTINGS_GROUP}/{name}", text)
    restored = SettingsStore(SETTINGS_GROUP, settings).restore(Parameters())
    assert (restored.device, restored.threshold, restored.opacity, restored.checkpoint) == ("auto", 0.5, 0.6, "mine")
    assert restored.isValid() == (True, "")


def test_remembered_settings_drive_a_run_on_a_real_scene_and_limits_refuse_before_it(slicer_scene, tmp_path):
    scene = EffectScene(scene_io)
    settings = settings_file(tmp_path / "Slicer.ini")
    SettingsStore(SETTINGS_GROUP, settings).save(Parameters(checkpoint="x", device="cpu", threshold=0.7))
    parameters = SettingsStore(SETTINGS_GROUP, settings).restore(Parameters())
    logic = SegmentLogic(loader=loader_for({"cpu": ThresholdPredictor()}))
    request = logic.request(parameters, scene.volumeNode, scene.segmentationNode, [scene.ids["liver"]])
    assert request.threshold == 0.7 and [t.case_id for t in request.tasks[0].templates] == ["template1", "template2"]
    with pytest.raises(InputError, match="device 'tpu' is not one of auto, cpu, cuda"):
        logic.request(Parameters(checkpoint="x", device="tpu"), scene.volumeNode, scene.segmentationNode,
                      [scene.ids["liver"]])
