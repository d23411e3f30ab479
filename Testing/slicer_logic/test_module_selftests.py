"""The modules' metadata and Slicer self-tests, run in the headless scene.

slicer-core has no GUI, so `slicer.ScriptedLoadableModule` and `slicer.i18n` are replaced by
minimal stand-ins; everything the self-tests touch in the scene is real.
"""

from __future__ import annotations

import importlib
import sys
import types
import unittest

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
