"""Render the VESSA effect panel (VESSASegment/Resources/UI/SegmentEditorVESSA.ui) to a PNG, offscreen.

    python Resources/render_ui.py    (PySide6; writes Resources/Screenshots/VESSASegment_panel.png)

No Slicer here, so the two CTK widgets of the panel are drawn by look-alike stand-ins (a slider
with a spin box, a line edit with a browse button); everything else is the .ui as Qt loads it.
The panel is filled with an example state (a finished run on a liver, previewing), so the
picture shows what a user sees after clicking "VESSA auto-segment".
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
OUTPUT = ROOT / "Resources" / "Screenshots" / "VESSASegment_panel.png"
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


def fill_example(panel: QWidget) -> None:
    """The state after a finished run on 'liver' (values typical of the effect, not measured)."""

    def child(kind, name):
        return panel.findChild(kind, name)

    child(QLabel, "segmentNameLabel").setText("liver")
    child(PathStandIn, "bankPathLineEdit").currentPath = "/data/vessa-banks/abdomen-ct"
    child(QLabel, "templatesLabel").setText("Segments on other volumes: kidney, liver, spleen")
    child(QComboBox, "checkpointComboBox").addItem("liver-ct (VESSA)")
    child(QPushButton, "installButton").setVisible(False)
    child(QPushButton, "cancelJobButton").setEnabled(False)
    child(QProgressBar, "progressBar").setValue(100)
    child(QLabel, "statusLabel").setText("Done in 41.3 s: check the preview, then Apply.")
    child(QLabel, "sliceLabel").setText("Slice 37 along k: confidence 58%")


def render(output: Path = OUTPUT) -> Path:
    """Load the .ui, fill the example state, grab it to `output` (PNG)."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    ui = QFile(str(UI_FILE))
    if not ui.open(QFile.ReadOnly):
        raise FileNotFoundError(UI_FILE)
    panel = PanelLoader().load(ui)
    ui.close()
    fill_example(panel)
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
    print(render())
