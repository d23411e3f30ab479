"""SegmentEditorVESSA.ui loads with PySide6's QUiLoader offscreen and has every widget, signal and
property the VESSA effect uses; the panel renders to a PNG (tools/render_ui.py)."""

from __future__ import annotations

import importlib.util
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
QtWidgets = pytest.importorskip("PySide6.QtWidgets")
from PySide6.QtCore import QMetaObject, QObject  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402
from ui_files import loaded_panel, ui_classes  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
UI_FILE = ROOT / "VESSASegment" / "Resources" / "UI" / "SegmentEditorVESSA.ui"
EFFECT = ROOT / "VESSASegment" / "SegmentEditorVESSALib" / "SegmentEditorEffect.py"
SELF_TEST = ROOT / "VESSASegment" / "Testing" / "Python" / "VESSASegmentSelfTest.py"
# Signals and properties of the CTK widgets the effect uses (from CTK's headers); PySide6 only
# knows them as their <extends> base class, QWidget.
CTK_SIGNALS = {"ctkSliderWidget": {"valueChanged(double)"}, "ctkPathLineEdit": {"currentPathChanged(QString)"}}
CTK_PROPERTIES = {"ctkSliderWidget": {"value"}, "ctkPathLineEdit": {"currentPath"}}


def effect_source() -> str:
    return EFFECT.read_text()


@pytest.fixture(scope="module")
def panel():
    yield from loaded_panel(UI_FILE)


def test_every_widget_the_effect_and_its_self_test_use_exists(panel):
    names = {name for path in (EFFECT, SELF_TEST) for name in re.findall(r"\.ui\.(\w+)", path.read_text())}
    assert {"autoSegmentButton", "applyButton", "thresholdSlider", "nextSliceButton", "progressBar"} <= names
    assert {"sliceLabel", "statusLabel"} <= set(re.findall(r"vessa\.ui\.(\w+)", SELF_TEST.read_text()))
    missing = sorted(name for name in names if panel.findChild(QObject, name) is None)
    assert missing == []


def test_the_button_clinicians_look_for(panel):
    assert panel.findChild(QtWidgets.QPushButton, "autoSegmentButton").text() == "VESSA auto-segment"
    assert panel.findChild(QtWidgets.QPushButton, "batchButton").text() == "Segment all empty segments"
    assert panel.findChild(QtWidgets.QPushButton, "saveBankButton").text() == "Save templates to bank"
    assert panel.findChild(QtWidgets.QPushButton, "loadBankButton").text() == "Load bank"


def test_connected_signals_exist(panel):
    connections = re.findall(r"self\.ui\.(\w+)\.connect\(\"([^\"]+)\"", effect_source())
    connections += re.findall(r"\(self\.ui\.(\w+), \"([^\"]+)\"\)", effect_source())
    assert len(connections) >= 15
    classes = ui_classes(UI_FILE)
    for name, signal in connections:
        if classes[name] in CTK_SIGNALS:
            assert signal in CTK_SIGNALS[classes[name]], (name, signal)
            continue
        meta = panel.findChild(QObject, name).metaObject()
        assert meta.indexOfSignal(QMetaObject.normalizedSignature(signal).data().decode()) >= 0, (name, signal)


def test_assigned_properties_exist(panel):
    assignments = re.findall(r"self\.ui\.(\w+)\.(\w+) = ", effect_source())
    assert len(assignments) >= 15
    classes = ui_classes(UI_FILE)
    for name, prop in assignments:
        if classes[name] in CTK_PROPERTIES:
            assert prop in CTK_PROPERTIES[classes[name]], (name, prop)
            continue
        meta = panel.findChild(QObject, name).metaObject()
        index = meta.indexOfProperty(prop)
        assert index >= 0 and meta.property(index).isWritable(), (name, prop)


def test_combo_boxes_match_the_parameters(panel):
    """The effect maps combo box indices/texts to Parameters values; the items must agree."""
    from VESSASegmentLib.parameters import DEVICES, TEMPLATE_SOURCES

    devices = panel.findChild(QtWidgets.QComboBox, "deviceComboBox")
    assert tuple(devices.itemText(i) for i in range(devices.count())) == DEVICES
    sources = panel.findChild(QtWidgets.QComboBox, "templateSourceComboBox")
    assert [sources.itemText(i) for i in range(sources.count())] == [
        "Other volumes in the scene",
        "Template bank folder",
        "Slices drawn in this segment",
    ]
    assert TEMPLATE_SOURCES == ("scene", "bank", "drawn")  # the effect indexes TEMPLATE_SOURCES by the item index


def test_sliders_match_the_parameter_ranges():
    sliders = {w.get("name"): w for w in ET.parse(UI_FILE).iter("widget") if w.get("class") == "ctkSliderWidget"}

    def number(widget, prop, default):
        node = widget.find(f"property[@name='{prop}']/double")
        return float(node.text) if node is not None else default

    threshold = sliders["thresholdSlider"]
    assert number(threshold, "minimum", 0) > 0 and number(threshold, "maximum", 100) < 1  # isValid: (0, 1)
    assert number(threshold, "value", 0) == 0.5
    assert (number(sliders["opacitySlider"], "minimum", 0), number(sliders["opacitySlider"], "maximum", 100)) == (0, 1)


@pytest.mark.parametrize("example", ["templates", "drawn"])
def test_panel_renders_to_png(tmp_path, panel, example):
    spec = importlib.util.spec_from_file_location("render_ui", ROOT / "tools" / "render_ui.py")
    render_ui = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render_ui)
    output = render_ui.render(tmp_path / "panel.png", example)
    image = QImage(str(output))
    assert image.width() >= 400 and image.height() >= 500
    colours = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
    assert len(colours) > 20  # text and widgets were drawn, not a blank canvas
