"""Structure: what a segment is, by Slicer terminology with its name as the fallback.

A segment's terminology entry (`vtkSegment.GetTerminology()`, set by the Segment Editor's
terminology selector or by a `.term.json` as MONAIAuto3DSeg does) reads
"context~category~type~typeModifier~anatomicContext~anatomicRegion~anatomicRegionModifier",
each code "scheme^value^meaning". Two segments are the same structure when both carry a
specific entry with the same coded type, type modifier, anatomic region and region modifier:
the meanings, which may be localized, do not count, so "Liver", "liver parenchyma" and "Leber"
coded SCT 10200004 are one structure. When either has no entry, or only Slicer's default for a
new segment ("Tissue", SCT 85756007), the names decide (case, spaces and underscores aside:
`vessa.io.bank.normalize_name`).
"""

from __future__ import annotations

from dataclasses import dataclass

from vessa.io.bank import normalize_name

GENERIC_TYPES = frozenset({("SCT", "85756007")})  # "Tissue": what a new segment gets by default
Code = tuple[str, str]  # (coding scheme, code value)


def _code(field: str) -> Code:
    scheme, _, rest = field.partition("^")
    return scheme.strip(), rest.partition("^")[0].strip()


def terminologyCodes(entry: str) -> tuple[Code, ...] | None:
    """The coded type, type modifier, anatomic region and region modifier of a terminology
    entry; None for an empty, malformed or generic entry."""
    fields = (entry or "").split("~")
    if len(fields) < 4:
        return None
    kind = _code(fields[2])
    if not kind[1] or kind in GENERIC_TYPES:
        return None
    region = [_code(field) for field in fields[5:7]]
    return (kind, _code(fields[3]), *region)


@dataclass(frozen=True)
class Structure:
    """A segment's name and terminology codes (None when it has no specific terminology)."""

    name: str
    codes: tuple[Code, ...] | None = None

    @classmethod
    def ofSegment(cls, segment) -> Structure:
        """The structure of a `vtkSegment`."""
        return cls(segment.GetName(), terminologyCodes(segment.GetTerminology()))

    def matches(self, other: Structure) -> bool:
        """Same structure: equal terminology codes when both have them, else equal names."""
        if self.codes is not None and other.codes is not None:
            return self.codes == other.codes
        return normalize_name(self.name) == normalize_name(other.name)
