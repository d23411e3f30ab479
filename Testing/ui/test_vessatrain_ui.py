"""VESSATrain.ui loads with PySide6's QUiLoader offscreen and has every widget the module's code uses."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
QtWidgets = pytest.importorskip("PySide6.QtWidgets")
from PySide6.QtCore import QObject  # noqa: E402
from ui_files import loaded_panel, ui_classes  # noqa: E402

MODULE = Path(__file__).resolve().parents[2] / "VESSATrain"
UI_FILE = MODULE / "Resources" / "UI" / "VESSATrain.ui"
# Every file that reaches into the panel through `<something>.ui.<objectName>`.
CODE_FILES = [MODULE / "VESSATrainLib" / "widget.py", MODULE / "Testing" / "Python" / "VESSATrainSelfTest.py"]
# The class each widget must have in the .ui for the calls the code makes on it.
EXPECTED_CLASSES = {
    "labelledVolumeSelector": "qMRMLNodeComboBox",
    "labelledSegmentationSelector": "qMRMLNodeComboBox",
    "unlabelledVolumesSelector": "qMRMLCheckableNodeComboBox",
    "unlabelledFolderEdit": "ctkPathLineEdit",
    "outputFolderEdit": "ctkPathLineEdit",
    "plotWidget": "qMRMLPlotWidget",
    "labelledTable": "QTableWidget",
    "structuresList": "QListWidget",
    "stageComboBox": "QComboBox",
    "methodComboBox": "QComboBox",
    "deviceComboBox": "QComboBox",
    "budgetUnitComboBox": "QComboBox",
    "initCheckpointComboBox": "QComboBox",
    "gpuCountSpinBox": "QSpinBox",
    "budgetSpinBox": "QSpinBox",
    "progressBar": "QProgressBar",
    "logView": "QPlainTextEdit",
    "startButton": "QPushButton",
    "cancelButton": "QPushButton",
    "resumeButton": "QPushButton",
    "cohortCollapsibleButton": "ctkCollapsibleButton",
    "trainingCollapsibleButton": "ctkCollapsibleButton",
}


def used_names() -> set[str]:
    """objectNames the code reaches as `.ui.<name>` (self.ui, panel.ui, ...)."""
    return {name for path in CODE_FILES for name in re.findall(r"\.ui\.(\w+)", path.read_text())}


@pytest.fixture(scope="module")
def panel():
    yield from loaded_panel(UI_FILE)


def test_ui_loads_with_the_module_root(panel):
    assert panel.objectName() == "VESSATrain"
    assert ET.parse(UI_FILE).getroot().find("widget").get("class") == "qMRMLWidget"


def test_every_widget_the_code_uses_exists(panel):
    names = used_names()
    assert {"startButton", "cancelButton", "resumeButton", "progressBar", "plotWidget", "logView"} <= names
    missing = sorted(name for name in names if panel.findChild(QObject, name) is None)
    assert missing == [], f"{UI_FILE.name} lacks widgets the code uses: {missing}"


def test_widgets_have_the_classes_the_code_relies_on():
    declared = ui_classes(UI_FILE)
    assert {name: declared.get(name) for name in EXPECTED_CLASSES} == EXPECTED_CLASSES
    assert set(EXPECTED_CLASSES) <= used_names()


def test_custom_widgets_fall_back_to_their_base_classes(panel):
    custom = {c.findtext("class"): c.findtext("extends") for c in ET.parse(UI_FILE).iter("customwidget")}
    assert set(custom) == {"ctkCollapsibleButton", "ctkPathLineEdit", "qMRMLCheckableNodeComboBox",
                           "qMRMLNodeComboBox", "qMRMLPlotWidget", "qMRMLWidget"}
    assert isinstance(panel.findChild(QObject, "plotWidget"), QtWidgets.QWidget)
    assert isinstance(panel.findChild(QObject, "stageComboBox"), QtWidgets.QComboBox)


def test_table_and_progress_defaults(panel):
    table = panel.findChild(QtWidgets.QTableWidget, "labelledTable")
    assert [table.horizontalHeaderItem(i).text() for i in range(table.columnCount())] == [
        "Labelled volume", "Segmentation"]
    assert panel.findChild(QtWidgets.QProgressBar, "progressBar").maximum() == 1000
    assert panel.findChild(QtWidgets.QPlainTextEdit, "logView").isReadOnly()
