"""`TrainWidget`: connects the panel (.ui) to TrainLogic and PlotLogic; no training logic here."""

from __future__ import annotations

import traceback

import ctk
import qt
import slicer
from VESSASegmentLib.declared_parameters import SettingsStore, declared

from vessa.errors import VessaError
from vessa.weights import WeightsRegistry
from VESSATrainLib.cohort_exporter import CohortExporter
from VESSATrainLib.plot_logic import PlotLogic
from VESSATrainLib.train_logic import TrainLogic
from VESSATrainLib.train_parameters import (
    BUDGET_UNITS,
    DEVICE_CHOICES,
    METHOD_CHOICES,
    SETTINGS_GROUP,
    STAGE_CHOICES,
    TrainParameters,
)

POLL_MS = 250  # the job's events are taken on the GUI thread at this interval
ACTIVE_STATES = ("running", "detached")
NO_CHECKPOINT = "(none: start from scratch)"


class TrainWidget:
    """The VESSA Train panel. `uiWidget`: the loaded VESSATrain.ui; logic/plots: injectable for tests."""

    def __init__(self, uiWidget, logic: TrainLogic | None = None, plots: PlotLogic | None = None):
        self.uiWidget = uiWidget
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        self.logic = logic or TrainLogic()
        self.plots = plots or PlotLogic()
        self.pairs: list[tuple] = []  # (volume node, segmentation node)
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.onTimer)
        self._setupControls()
        self._connect()
        self.restoreLastJob()

    # --- setup ---------------------------------------------------------------------------------

    def _setupControls(self) -> None:
        for combo, choices in ((self.ui.stageComboBox, STAGE_CHOICES), (self.ui.methodComboBox, METHOD_CHOICES),
                               (self.ui.deviceComboBox, DEVICE_CHOICES), (self.ui.budgetUnitComboBox, BUDGET_UNITS)):
            for value, text in choices:
                combo.addItem(text, value)
        self.ui.unlabelledFolderEdit.filters = ctk.ctkPathLineEdit.Dirs
        self.ui.outputFolderEdit.filters = ctk.ctkPathLineEdit.Dirs | ctk.ctkPathLineEdit.Writable
        self.ui.outputFolderEdit.settingKey = "VESSATrain/OutputFolder"
        self.ui.labelledTable.horizontalHeader().setSectionResizeMode(0, qt.QHeaderView.Stretch)
        self.ui.plotWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.gpuCountSpinBox.minimum = declared(TrainParameters, "gpus")[0].minimum
        self.ui.budgetSpinBox.minimum = declared(TrainParameters, "budget")[0].minimum
        self._showRemembered(SettingsStore(SETTINGS_GROUP).restore(TrainParameters()))
        self.onStageChanged()
        self.updateButtons()

    def _showRemembered(self, remembered: TrainParameters) -> None:
        """Put the last settings used (QSettings) into the controls."""
        for combo, value in ((self.ui.stageComboBox, remembered.stages), (self.ui.methodComboBox, remembered.method),
                             (self.ui.deviceComboBox, remembered.device),
                             (self.ui.budgetUnitComboBox, remembered.budgetUnit)):
            combo.setCurrentIndex(max(combo.findData(value), 0))
        self.ui.gpuCountSpinBox.value = remembered.gpus
        self.ui.budgetSpinBox.value = remembered.budget

    def _connect(self) -> None:
        self.ui.addPairButton.clicked.connect(self.onAddPair)
        self.ui.removePairButton.clicked.connect(self.onRemovePairs)
        self.ui.stageComboBox.currentIndexChanged.connect(self.onStageChanged)
        self.ui.methodComboBox.currentIndexChanged.connect(self.onStageChanged)
        self.ui.deviceComboBox.currentIndexChanged.connect(self.updateButtons)
        self.ui.outputFolderEdit.currentPathChanged.connect(self.restoreLastJob)
        self.ui.startButton.clicked.connect(self.onStart)
        self.ui.cancelButton.clicked.connect(self.onCancel)
        self.ui.resumeButton.clicked.connect(self.onResume)

    def enter(self) -> None:
        """Panel shown: nodes and checkpoints may have changed meanwhile."""
        self.refreshCohort()
        self.onStageChanged()

    def cleanup(self) -> None:
        """Module closed or Slicer quitting: ask a running job to stop, so that it saves a checkpoint."""
        self.timer.stop()
        if self.logic.state == "running":
            self.logic.cancel()

    # --- cohort -----------------------------------------------------------------------------------

    def onAddPair(self) -> None:
        volume = self.ui.labelledVolumeSelector.currentNode()
        segmentation = self.ui.labelledSegmentationSelector.currentNode()
        if volume is None:
            self.showMessage("Pick a labelled volume first.")
            return
        self.pairs = [pair for pair in self.pairs if pair[0] is not volume] + [(volume, segmentation)]
        self.refreshCohort()

    def onRemovePairs(self) -> None:
        rows = {index.row() for index in self.ui.labelledTable.selectionModel().selectedRows()}
        self.pairs = [pair for row, pair in enumerate(self.pairs) if row not in rows]
        self.refreshCohort()

    def refreshCohort(self) -> None:
        """Drop pairs whose nodes left the scene; refill the table and the structure list."""
        self.pairs = [(v, s) for v, s in self.pairs if v.GetScene() and (s is None or s.GetScene())]
        table = self.ui.labelledTable
        table.setRowCount(len(self.pairs))
        for row, (volume, segmentation) in enumerate(self.pairs):
            table.setItem(row, 0, qt.QTableWidgetItem(volume.GetName()))
            table.setItem(row, 1, qt.QTableWidgetItem(segmentation.GetName() if segmentation else "(none)"))
        checked = set(self.checkedStructures())
        known = {self.ui.structuresList.item(i).text() for i in range(self.ui.structuresList.count)}
        names = [CohortExporter.segmentNames(s) for _, s in self.pairs if s is not None]
        self.ui.structuresList.clear()
        for name in dict.fromkeys(n for case in names for n in case):
            item = qt.QListWidgetItem(name)
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            inAll = all(name in case for case in names)
            # New names start ticked if every labelled case has them; earlier choices are kept.
            item.setCheckState(qt.Qt.Checked if (name in checked or (name not in known and inAll))
                               else qt.Qt.Unchecked)
            if not inAll:
                item.setToolTip("Not every labelled case has this segment.")
            self.ui.structuresList.addItem(item)
        self.updateButtons()

    def checkedStructures(self) -> list[str]:
        items = [self.ui.structuresList.item(i) for i in range(self.ui.structuresList.count)]
        return [item.text() for item in items if item.checkState() == qt.Qt.Checked]

    # --- training options ---------------------------------------------------------------------

    def onStageChanged(self) -> None:
        stages = self.ui.stageComboBox.currentData
        self.ui.methodComboBox.enabled = stages != "stage1"
        assistant = stages == "stage2"
        self.ui.initCheckpointLabel.text = "VESSA assistant:" if assistant else "Start from:"
        self.ui.initCheckpointComboBox.enabled = not (assistant and self.ui.methodComboBox.currentData == "dusss")
        # stage 2's VESSA: template transfer with minisam weights, or a stage-1 assistant
        self.refreshCheckpoints(kinds=("minisam", "vessa") if assistant else ("sam2", "vessa"))

    def refreshCheckpoints(self, kinds: tuple[str, ...]) -> None:
        """Fill the checkpoint box with the cached checkpoints of `kinds` (`vessa weights list`)."""
        combo = self.ui.initCheckpointComboBox
        current = combo.currentData
        combo.clear()
        combo.addItem(NO_CHECKPOINT, "")
        try:
            registry = WeightsRegistry()
            entries = [e for e in registry.entries().values() if e.kind in kinds and registry.is_available(e)]
        except VessaError as error:
            self.showMessage(str(error))
            entries = []
        for entry in entries:
            combo.addItem(entry.name, entry.name)
            combo.setItemData(combo.count - 1, entry.description, qt.Qt.ToolTipRole)
        combo.setCurrentIndex(max(combo.findData(current), 0))

    def parameters(self) -> TrainParameters:
        """The request the panel shows now."""
        return TrainParameters(
            labelled=list(self.pairs),
            unlabelled=list(self.ui.unlabelledVolumesSelector.checkedNodes()),
            unlabelledFolder=self.ui.unlabelledFolderEdit.currentPath,
            structures=self.checkedStructures(),
            stages=self.ui.stageComboBox.currentData,
            method=self.ui.methodComboBox.currentData,
            initCheckpoint=self.ui.initCheckpointComboBox.currentData or "",
            device=self.ui.deviceComboBox.currentData,
            gpus=self.ui.gpuCountSpinBox.value,
            budget=self.ui.budgetSpinBox.value,
            budgetUnit=self.ui.budgetUnitComboBox.currentData,
            outputFolder=self.ui.outputFolderEdit.currentPath,
        )

    # --- job --------------------------------------------------------------------------------------

    def onStart(self) -> None:
        self.refreshCohort()
        SettingsStore(SETTINGS_GROUP).save(self.parameters())
        self.ui.outputFolderEdit.addCurrentPathToHistory()
        self.plots.clear()
        self.ui.logView.clear()
        self._run(lambda: self.logic.start(self.parameters()), "Could not start training")

    def onResume(self) -> None:
        self.ui.outputFolderEdit.addCurrentPathToHistory()
        self._run(lambda: self.logic.resume(self.ui.outputFolderEdit.currentPath), "Could not resume training")

    def onCancel(self) -> None:
        self.logic.cancel()
        self.ui.cancelButton.enabled = False
        self.ui.etaLabel.text = "Cancelling: the job saves a checkpoint and stops..."

    def _run(self, action, failure: str) -> None:
        """Run start/resume; bad input is shown as a message, before anything starts."""
        self.showMessage("")
        try:
            with slicer.util.WaitCursor():
                lines = action()
        except VessaError as error:
            self.showMessage(str(error))
            slicer.util.errorDisplay(f"{failure}:\n\n{error}")
            return
        except Exception as error:  # an unexpected failure still reaches the user, with its traceback
            self.showMessage(f"{failure}: {error}")
            slicer.util.errorDisplay(f"{failure}: {error}", detailedText=traceback.format_exc())
            return
        self.appendLog(lines)
        self.timer.start()
        self.updateFromLogic()

    def onTimer(self) -> None:
        self.appendLog(self.logic.poll())
        self.updateFromLogic()

    def restoreLastJob(self) -> None:
        """Show the job of the output folder (e.g. after a restart), if there is one and none runs."""
        folder = self.ui.outputFolderEdit.currentPath
        if folder and self.logic.restore(folder):
            self.ui.logView.setPlainText(f"Last job in {folder}: {self.logic.state}")
            if self.logic.state == "detached":
                self.timer.start()
        self.updateFromLogic()

    # --- view --------------------------------------------------------------------------------------

    def updateFromLogic(self) -> None:
        state, progress = self.logic.state, self.logic.progress
        if progress is not None:
            self.ui.progressBar.value = int(round(progress.fraction * self.ui.progressBar.maximum))
            self.ui.etaLabel.text = progress.etaText() if state == "running" else ""
            chartSeries = {stage: metrics for stage, metrics in progress.series.items() if metrics}
            if chartSeries:
                self.plots.update(chartSeries)
                if self.ui.plotWidget.mrmlPlotViewNode() is not self.plots.viewNode():
                    self.ui.plotWidget.setMRMLPlotViewNode(self.plots.viewNode())
        if state not in ACTIVE_STATES:
            self.timer.stop()
            self.ui.etaLabel.text = ""
        if state == "finished":
            self.ui.progressBar.value = self.ui.progressBar.maximum
            self.onStageChanged()  # the new checkpoint appears in the list
        if self.logic.message or state in ("finished", "cancelled", "failed"):
            self.showMessage(self.logic.message)
        self.ui.summaryLabel.text = self.logic.summary
        self.updateButtons()

    def updateButtons(self) -> None:
        active = self.logic.state in ACTIVE_STATES
        self.ui.startButton.enabled = not active
        self.ui.resumeButton.enabled = not active and self.logic.state in ("cancelled", "failed")
        self.ui.cancelButton.enabled = active
        self.ui.gpuCountSpinBox.enabled = self.ui.deviceComboBox.currentData != "cpu"
        for widget in (self.ui.cohortCollapsibleButton, self.ui.trainingCollapsibleButton):
            widget.enabled = not active

    def appendLog(self, lines: list[str]) -> None:
        for line in lines:
            self.ui.logView.appendPlainText(line)

    def showMessage(self, text: str) -> None:
        self.ui.messageLabel.text = text
