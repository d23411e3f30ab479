"""`TrainParameters`: what the panel asks for, with declared limits, and the choices its combo boxes offer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from VESSASegmentLib.declared_parameters import Choice, Minimum, violations

# (value, text shown) of each combo box; the widget fills the boxes from these.
STAGE_CHOICES = (
    ("both", "Stage 1, then stage 2"),
    ("stage1", "Stage 1: VESSA assistant"),
    ("stage2", "Stage 2: student network"),
)
METHOD_CHOICES = (
    ("vessa", "VESSA + UniMatch-V2"),
    ("dusss", "DuSSS"),
)
DEVICE_CHOICES = (
    ("auto", "GPU if available"),
    ("cuda", "GPU (CUDA)"),
    ("cpu", "CPU"),
)
BUDGET_UNITS = (
    ("steps", "steps"),
    ("minutes", "minutes"),
)
SETTINGS_GROUP = "VESSA/Train"  # QSettings group of the remembered parameters
STAGES_OF = {"both": ["stage1", "stage2"], "stage1": ["stage1"], "stage2": ["stage2"]}


def _values(choices: tuple[tuple[str, str], ...]) -> list[str]:
    return [value for value, _ in choices]


@dataclass
class TrainParameters:
    """A training request from the panel.

    labelled: (volume node, segmentation node or None) pairs; unlabelled: volume nodes;
    unlabelledFolder: a folder of unlabelled volume files ("" = none); structures: segment
    names to learn; stages/method/device/budgetUnit: values of the *_CHOICES above;
    initCheckpoint: registry name or file the first stage starts from ("" = none); gpus:
    processes for torchrun when > 1; budget: steps or minutes per stage; outputFolder: the job folder.
    """

    labelled: list[tuple[Any, Any]] = field(default_factory=list)
    unlabelled: list[Any] = field(default_factory=list)
    unlabelledFolder: str = ""
    structures: list[str] = field(default_factory=list)
    stages: Annotated[str, Choice(_values(STAGE_CHOICES))] = "both"
    method: Annotated[str, Choice(_values(METHOD_CHOICES))] = "vessa"
    initCheckpoint: str = ""
    device: Annotated[str, Choice(_values(DEVICE_CHOICES))] = "auto"
    gpus: Annotated[int, Minimum(1)] = 1
    budget: Annotated[int, Minimum(1)] = 2000
    budgetUnit: Annotated[str, Choice(_values(BUDGET_UNITS))] = "steps"
    outputFolder: str = ""

    # kept across Slicer sessions (QSettings); the cohort and the job folder are the scene's
    REMEMBERED = ("stages", "method", "device", "gpus", "budget", "budgetUnit")

    def stageList(self) -> list[str]:
        """The stages to run, in order."""
        return list(STAGES_OF[self.stages])

    def isValid(self) -> tuple[bool, str]:
        """(True, "") if every choice is one of the offered values, else (False, reason)."""
        problems = violations(self)
        if problems:
            return False, problems[0]
        if not self.outputFolder.strip():
            return False, "choose an output folder for the job"
        return True, ""
