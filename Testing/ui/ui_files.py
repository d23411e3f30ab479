"""Shared by the .ui tests: load a Qt Designer file offscreen with PySide6, list its widgets."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from PySide6 import QtWidgets
from PySide6.QtCore import QFile
from PySide6.QtUiTools import QUiLoader


def ui_classes(ui_file: Path) -> dict[str, str]:
    """objectName -> class of every widget declared in the .ui."""
    return {w.get("name"): w.get("class") for w in ET.parse(ui_file).iter("widget")}


def loaded_panel(ui_file: Path) -> Iterator[QtWidgets.QWidget]:
    """Yield the .ui loaded by QUiLoader (custom Slicer widgets fall back to their base class)."""
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    ui = QFile(str(ui_file))
    assert ui.open(QFile.ReadOnly)
    loader = QUiLoader()
    widget = loader.load(ui)
    ui.close()
    assert widget is not None, loader.errorString()
    yield widget
    widget.deleteLater()
    app.processEvents()
