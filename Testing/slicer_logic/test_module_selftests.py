"""The modules' metadata and Slicer self-tests, run in the headless scene.

slicer-core has no GUI, so `slicer.ScriptedLoadableModule`, `slicer.i18n` and `slicer.app` are replaced by
minimal stand-ins; everything the self-tests touch in the scene is real.
"""

from __future__ import annotations

import importlib
import sys
import types
import unittest
from pathlib import Path

import pytest

MODULES = ("VESSASegment", "VESSATrain")


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent


class ScriptedLoadableModuleWidget:
    pass


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, msec=None):
        pass


class Application:
    """Stand-in for `slicer.app`: records signal connections."""

    def __init__(self):
        self.connections: list[tuple[str, object]] = []

    def connect(self, signal, slot):
        self.connections.append((signal, slot))


@pytest.fixture
def load_module(slicer_scene, monkeypatch):
    """Import a module's main file against the stand-in GUI base classes."""
    api = types.ModuleType("slicer.ScriptedLoadableModule")
    api.ScriptedLoadableModule = ScriptedLoadableModule
    api.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    api.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", api)
    monkeypatch.setitem(sys.modules, "slicer.i18n", i18n)
    import slicer

    monkeypatch.setattr(slicer, "app", Application(), raising=False)

    def load(name: str) -> types.ModuleType:
        monkeypatch.delitem(sys.modules, name, raising=False)
        return importlib.import_module(name)

    return load


@pytest.mark.parametrize("name", MODULES)
def test_module_metadata(load_module, name):
    parent = types.SimpleNamespace()
    getattr(load_module(name), name)(parent)
    assert parent.title == name.replace("VESSA", "VESSA ")
    assert parent.categories == ["Segmentation"]
    assert parent.contributors
    assert "VESSA" in parent.helpText
    assert "arXiv:2511.19759" in parent.acknowledgementText


def test_train_module_depends_on_segment_module(load_module):
    parent = types.SimpleNamespace()
    load_module("VESSATrain").VESSATrain(parent)
    assert parent.dependencies == ["VESSASegment"]


@pytest.mark.parametrize("name", MODULES)
def test_module_self_test_passes(load_module, name):
    result = unittest.TestResult()
    getattr(load_module(name), f"{name}Test")().run(result)
    assert result.testsRun == 1
    assert result.wasSuccessful(), [text for _, text in result.failures + result.errors]


def test_segment_module_registers_the_vessa_effect_at_startup(load_module, monkeypatch):
    """On startupCompleted() the module registers a scripted effect whose source is the effect file."""
    import slicer

    module = load_module("VESSASegment").VESSASegment(types.SimpleNamespace())
    assert slicer.app.connections == [("startupCompleted()", module.registerEditorEffect),
                                      ("startupCompleted()", module.registerSampleData)]
    registered = []

    class ScriptedEffect:
        def __init__(self, parent):
            self.source = None

        def setPythonSource(self, path):
            self.source = path

        def self(self):
            return types.SimpleNamespace(register=lambda: registered.append(self.source))

    effects = types.ModuleType("qSlicerSegmentationsEditorEffectsPythonQt")
    effects.qSlicerSegmentEditorScriptedEffect = ScriptedEffect
    monkeypatch.setitem(sys.modules, "qSlicerSegmentationsEditorEffectsPythonQt", effects)
    module.registerEditorEffect()
    assert len(registered) == 1 and registered[0].endswith("VESSASegment/SegmentEditorVESSALib/SegmentEditorEffect.py")
    source = Path(registered[0]).read_text()
    assert "class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect)" in source
    assert 'scriptedEffect.name = "VESSA"' in source


def test_segment_module_registers_the_sample_sets_at_startup(load_module, monkeypatch):
    """On startupCompleted() every sample set goes into the Sample Data module's "VESSA" category."""
    from vessa.samples import SAMPLE_SETS

    registered = []
    logic = types.SimpleNamespace(registerCustomSampleDataSource=lambda **entry: registered.append(entry))
    monkeypatch.setitem(sys.modules, "SampleData", types.SimpleNamespace(SampleDataLogic=logic))
    load_module("VESSASegment").VESSASegment(types.SimpleNamespace()).registerSampleData()
    assert [entry["sampleName"] for entry in registered] == [f"VESSA {name}" for name in SAMPLE_SETS]
    assert {entry["category"] for entry in registered} == {"VESSA"}

