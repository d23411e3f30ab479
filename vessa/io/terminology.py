"""Which segments are the same structure: Slicer terminology codes, with the name as the fallback.

A Slicer terminology entry (`vtkSegment.GetTerminology()`, the `TerminologyEntry` tag of a
`.seg.nrrd` segment, or a MONAIAuto3DSeg-style `.term.json`) reads
"context~category~type~typeModifier~anatomicContext~anatomicRegion~anatomicRegionModifier",
each code "scheme^value^meaning". Two segments are the same structure when both carry a
specific entry with the same coded type, type modifier, anatomic region and region modifier:
the meanings, which may be localized, do not count, so "Liver", "liver parenchyma" and "Leber"
coded SCT 10200004 are one structure. When either has no entry, or only Slicer's default for a
new segment ("Tissue", SCT 85756007), the names decide (`normalize_name`).
"""

from __future__ import annotations

import re

GENERIC_TYPES = frozenset({("SCT", "85756007")})  # "Tissue": what a new segment gets by default
Code = tuple[str, str]  # (coding scheme, code value)


def normalize_name(name: str) -> str:
    """Segment names compare case-insensitively with runs of spaces/underscores collapsed."""
    return re.sub(r"[\s_]+", " ", name).strip().lower()


def _code(field: str) -> Code:
    scheme, _, rest = field.partition("^")
    return scheme.strip(), rest.partition("^")[0].strip()


def terminology_codes(entry: str) -> tuple[Code, ...] | None:
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


def same_structure(name: str, entry: str, other_name: str, other_entry: str) -> bool:
    """Same structure: equal terminology codes when both entries are specific, else equal names."""
    codes, other_codes = terminology_codes(entry), terminology_codes(other_entry)
    if codes is not None and other_codes is not None:
        return codes == other_codes
    return normalize_name(name) == normalize_name(other_name)
