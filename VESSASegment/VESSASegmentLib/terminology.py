"""Structure: what a segment is, by Slicer terminology with its name as the fallback.

The rule (`vessa.io.terminology`, shared with template banks): equal coded type, type modifier,
anatomic region and region modifier when both segments carry a specific terminology entry,
else equal names (case, spaces and underscores aside).
"""

from __future__ import annotations

from dataclasses import dataclass

from vessa.io.terminology import same_structure


@dataclass(frozen=True)
class Structure:
    """A segment's name and Slicer terminology entry ("" when it has none)."""

    name: str
    terminology: str = ""

    @classmethod
    def ofSegment(cls, segment) -> Structure:
        """The structure of a `vtkSegment`."""
        return cls(segment.GetName(), segment.GetTerminology() or "")

    def matches(self, other: Structure) -> bool:
        """Same structure: equal terminology codes when both have them, else equal names."""
        return same_structure(self.name, self.terminology, other.name, other.terminology)
