"""Render the VESSA Train panel offscreen, in the state of a real job, to Resources/Screenshots/.

    python tools/render_vessatrain_panel.py [--steps 40]    (needs slicer-core and PySide6)

Real parts: a headless slicer-core scene with four pyradiomics sample cases (`vessa samples
fetch pyradiomics`): brain1 and lung1 with their lesion segmentations as labelled cases,
brain2 and lung2 as unlabelled ones; `TrainLogic` checks the request, exports the cohort and
runs stage 2 with DuSSS on the CPU in a background process; the panel is filled from the
logic when the job is half way, then the job is cancelled. The .ui is loaded with QUiLoader;
Slicer's own widgets (node selectors, path edits, collapsible buttons, the plot view) are
not available outside Slicer, so Qt stand-ins (with render_ui.py's) show the same content, and
the loss/Dice curves that Slicer's plot view draws from PlotLogic's nodes are painted here.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Property, QFile, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QColor, QFont, QPainter, QPen, QPixmap  # noqa: E402
from PySide6.QtWidgets import (  # noqa: E402
    QApplication,
    QComboBox,
    QGroupBox,
    QHeaderView,
    QLabel,
    QListWidgetItem,
    QTableWidgetItem,
    QWidget,
)
from render_ui import PanelLoader  # noqa: E402 (the sibling script: ctkPathLineEdit stand-in)

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "VESSASegment"), str(ROOT / "VESSATrain")]
UI_FILE = ROOT / "VESSATrain" / "Resources" / "UI" / "VESSATrain.ui"
OUTPUT = ROOT / "Resources" / "Screenshots" / "VESSATrain_panel.png"
CURVE_COLORS = {"loss": QColor(217, 84, 26), "dice": QColor(0, 115, 189), "val_dice": QColor(120, 171, 48)}


class CollapsibleStandIn(QGroupBox):
    """Looks like ctkCollapsibleButton (expanded): a titled box; the .ui sets its `text`."""

    text = Property(str, QGroupBox.title, QGroupBox.setTitle)


class TrainPanelLoader(PanelLoader):
    """render_ui.py's loader, plus stand-ins for the MRML widgets of this panel."""

    STAND_INS = {**PanelLoader.STAND_INS, "ctkCollapsibleButton": CollapsibleStandIn,
                 "qMRMLNodeComboBox": QComboBox, "qMRMLCheckableNodeComboBox": QComboBox, "qMRMLPlotWidget": QLabel}


def headless_scene():
    """slicer-core's MRML scene with the logics `slicer.util` needs (DESIGN.md's recipe)."""
    import slicer

    scene = slicer.vtkMRMLScene()
    application = slicer.vtkSlicerApplicationLogic()
    application.SetMRMLScene(scene)
    modules = {}
    for attribute, name, class_name in (("colors", "Colors", "vtkSlicerColorLogic"),
                                        ("volumes", "Volumes", "vtkSlicerVolumesLogic"),
                                        ("segmentations", "Segmentations", "vtkSlicerSegmentationsModuleLogic")):
        logic = getattr(slicer, class_name)()
        logic.SetMRMLApplicationLogic(application)
        logic.SetMRMLScene(scene)
        application.SetModuleLogic(name, logic)
        modules[attribute] = SimpleNamespace(logic=lambda logic=logic: logic)
    slicer.mrmlScene, slicer.modules = scene, SimpleNamespace(**modules)
    return scene, application, modules


def load_cases() -> dict[str, tuple]:
    """pyradiomics sample cases as scene nodes: name -> (volume node, segmentation node)."""
    from VESSASegmentLib import scene_io

    from vessa.io import read_segmentation, read_volume
    from vessa.samples import fetch, load_manifest

    fetch("pyradiomics")
    nodes = {}
    for case in load_manifest("pyradiomics"):
        if case.case_id in ("brain1", "lung1", "brain2", "lung2"):
            volume = scene_io.volumeToNode(read_volume(case.image), case.case_id)
            segmentation = scene_io.segmentationToNode(read_segmentation(case.segmentation), volume,
                                                         f"{case.case_id} segmentation")
            nodes[case.case_id] = (volume, segmentation)
    return nodes


def run_job(steps: int, folder: Path):
    """Start the real job, return the logic when it is half way (the job keeps running)."""
    from VESSATrainLib.train_logic import TrainLogic
    from VESSATrainLib.train_parameters import TrainParameters

    cases = load_cases()
    params = TrainParameters(labelled=[cases["brain1"], cases["lung1"]],
                             unlabelled=[cases["brain2"][0], cases["lung2"][0]], structures=["lesion"],
                             stages="stage2", method="dusss", device="auto", budget=steps,
                             outputFolder=str(folder))
    logic = TrainLogic(python=sys.executable)
    log = logic.start(params)
    while logic.state == "running" and logic.progress.fraction < 0.5:
        log += logic.poll()
        time.sleep(0.25)
    return logic, params, log


def plot_pixmap(series: dict[str, list[tuple[int, float]]], total: int, size=(400, 220)) -> QPixmap:
    """The loss/Dice curves as Slicer's plot view shows them (x: step, y: value)."""
    pixmap = QPixmap(*size)
    pixmap.fill(Qt.white)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.Antialiasing)
    left, top, right, bottom = 42, 24, size[0] - 12, size[1] - 30
    high = max([1.0] + [value for points in series.values() for _, value in points])
    painter.setPen(QPen(Qt.black, 1))
    painter.drawLine(left, bottom, right, bottom)
    painter.drawLine(left, top, left, bottom)
    painter.setFont(QFont("Sans", 8))
    painter.drawText(left, size[1] - 8, f"step (of {total})")
    for tick in (0.0, high / 2, high):
        y = bottom - (bottom - top) * tick / high
        painter.drawText(4, int(y) + 4, f"{tick:.2f}")
    painter.drawText(left, 14, "VESSA training: stage 2 (DuSSS)")
    legend_x = right - 150
    for index, (name, points) in enumerate(sorted(series.items())):
        color = CURVE_COLORS[name]
        painter.setPen(QPen(color, 2))
        polyline = [QPointF(left + (right - left) * step / total, bottom - (bottom - top) * value / high)
                    for step, value in points]
        for start, end in zip(polyline, polyline[1:], strict=False):
            painter.drawLine(start, end)
        painter.drawLine(legend_x, top + 6 + 14 * index, legend_x + 18, top + 6 + 14 * index)
        painter.setPen(Qt.black)
        painter.drawText(legend_x + 24, top + 10 + 14 * index, f"stage 2 {name}")
    painter.end()
    return pixmap


def render(logic, params, log: list[str]) -> QWidget:
    """The panel built from the .ui and filled as TrainWidget fills it for this job state."""
    from VESSATrainLib.train_parameters import BUDGET_UNITS, DEVICE_CHOICES, METHOD_CHOICES, STAGE_CHOICES

    ui_file = QFile(str(UI_FILE))
    ui_file.open(QFile.ReadOnly)
    panel = TrainPanelLoader().load(ui_file)
    ui_file.close()
    ui = SimpleNamespace(**{w.objectName(): w for w in panel.findChildren(QWidget) if w.objectName()})
    for combo, choices, value in ((ui.stageComboBox, STAGE_CHOICES, params.stages),
                                  (ui.methodComboBox, METHOD_CHOICES, params.method),
                                  (ui.deviceComboBox, DEVICE_CHOICES, params.device),
                                  (ui.budgetUnitComboBox, BUDGET_UNITS, params.budgetUnit)):
        for data, text in choices:
            combo.addItem(text, data)
        combo.setCurrentIndex(combo.findData(value))
    volume, segmentation = params.labelled[-1]
    ui.labelledVolumeSelector.addItem(volume.GetName())
    ui.labelledSegmentationSelector.addItem(segmentation.GetName())
    ui.labelledTable.horizontalHeader().setSectionResizeMode(0, QHeaderView.Stretch)
    ui.labelledTable.setRowCount(len(params.labelled))
    for row, (volume, segmentation) in enumerate(params.labelled):
        ui.labelledTable.setItem(row, 0, QTableWidgetItem(volume.GetName()))
        ui.labelledTable.setItem(row, 1, QTableWidgetItem(segmentation.GetName()))
    ui.unlabelledVolumesSelector.addItem(", ".join(node.GetName() for node in params.unlabelled))
    for name in params.structures:
        item = QListWidgetItem(name)
        item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
        item.setCheckState(Qt.Checked)
        ui.structuresList.addItem(item)
    ui.initCheckpointLabel.setText("VESSA assistant:")
    ui.initCheckpointComboBox.addItem("(none: start from scratch)")
    ui.initCheckpointComboBox.setEnabled(False)
    ui.gpuCountSpinBox.setEnabled(False)
    ui.budgetSpinBox.setValue(params.budget)
    ui.outputFolderEdit.currentPath = params.outputFolder
    progress = logic.progress
    ui.progressBar.setValue(round(progress.fraction * ui.progressBar.maximum()))
    ui.etaLabel.setText(progress.etaText())
    ui.messageLabel.setText(logic.message)  # the CPU warning
    ui.logView.setPlainText("\n".join(log))
    plotted = {name: points for name, points in progress.series["stage2"].items() if name in CURVE_COLORS}
    ui.plotWidget.setPixmap(plot_pixmap(plotted, params.budget))
    for widget, enabled in ((ui.startButton, False), (ui.resumeButton, False), (ui.cancelButton, True),
                            (ui.cohortCollapsibleButton, False), (ui.trainingCollapsibleButton, False)):
        widget.setEnabled(enabled)
    panel.resize(440, panel.sizeHint().height())
    return panel


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="stage-2 steps of the job shown")
    args = parser.parse_args()
    app = QApplication.instance() or QApplication([])
    scene_parts = headless_scene()  # noqa: F841 (the logics must live as long as the scene)
    with tempfile.TemporaryDirectory() as folder:
        logic, params, log = run_job(args.steps, Path(folder) / "lesion-job")
        panel = render(logic, params, log)
        logic.cancel()
        while logic.state == "running":
            logic.poll()
            time.sleep(0.1)
        OUTPUT.parent.mkdir(parents=True, exist_ok=True)
        panel.grab().save(str(OUTPUT))
    app.processEvents()
    print(f"wrote {OUTPUT} (job {logic.state}: {logic.message})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
