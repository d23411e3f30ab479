"""vessa.io.terminology: one structure by Slicer terminology codes, the name as the fallback."""

from __future__ import annotations

import pytest
from terminology_entries import LEBER, LIVER, MASS_IN_LIVER, MASS_IN_LUNG, SPLEEN, TISSUE

from vessa.io.terminology import normalize_name, same_structure, terminology_codes


@pytest.mark.parametrize(("a", "b", "same"), [
    (("Liver", LIVER), ("Leber", LEBER), True),
    (("Liver", LIVER), ("liver parenchyma", LIVER), True),
    (("Liver", LIVER), ("liver", SPLEEN), False),
    (("Liver", LIVER), ("LIVER", TISSUE), True),
    (("liver", TISSUE), ("spleen", TISSUE), False),
    (("Left_Lung", ""), ("left  lung", ""), True),
    (("mass", MASS_IN_LIVER), ("mass", MASS_IN_LUNG), False),
])
def test_structures_match_by_codes_when_both_have_them_else_by_name(a, b, same):
    assert same_structure(*a, *b) is same and same_structure(*b, *a) is same


@pytest.mark.parametrize("text", ["", "not an entry", "a~b~^^~^^", TISSUE])
def test_empty_malformed_and_generic_entries_have_no_codes(text):
    assert terminology_codes(text) is None


def test_codes_are_type_modifier_and_region():
    assert terminology_codes(MASS_IN_LIVER) == (("SCT", "4147007"), ("", ""), ("SCT", "10200004"), ("", ""))


def test_names_compare_without_case_spaces_or_underscores():
    assert normalize_name("  Left_Hippocampus ") == normalize_name("left  hippocampus")
