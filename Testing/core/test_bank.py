"""Template bank: create, add, reopen, list, load templates; bad banks give named errors."""

import json

import numpy as np
import pytest
from terminology_entries import LEBER, LIVER, SPLEEN

from vessa.errors import BankError, GeometryError
from vessa.io import Segmentation, TemplateBank, Volume
from vessa.io.bank import INDEX_NAME, Template


def case(seed: int, shift: int = 0) -> tuple[Volume, Segmentation]:
    image = Volume(np.random.default_rng(seed).normal(size=(4, 16, 16)).astype(np.float32), (1, 1, 2),
                   (seed, 0, 0))
    segmentation = Segmentation.on_grid(image)
    liver = np.zeros(image.shape, bool)
    liver[1:3, 4 + shift:9 + shift, 4:10] = True
    segmentation.add("Liver", liver)
    spleen = np.zeros(image.shape, bool)
    spleen[:, 12:, 12:] = True
    segmentation.add("spleen", spleen)
    return image, segmentation


def test_bank_round_trip(tmp_path):
    bank = TemplateBank.create(tmp_path / "bank")
    for index in range(3):
        bank.add(*case(index, shift=index), case_id=f"case{index}", modality="CT",
                 descriptions={"Liver": "large organ in the right upper abdomen"})
    reopened = TemplateBank.open(tmp_path / "bank")
    assert [entry.id for entry in reopened.entries] == ["case0", "case1", "case2"]
    assert reopened.names() == ["Liver", "spleen"]
    templates = reopened.templates("liver", exclude_case="case1")
    assert [t.case_id for t in templates] == ["case0", "case2"]
    first_image, first_seg = case(0)
    np.testing.assert_array_equal(templates[0].image.array, first_image.array)
    np.testing.assert_array_equal(templates[0].mask, first_seg.get("Liver").mask)
    assert templates[1].mask[1, 6:11, 4:10].all()
    assert templates[0].text == "large organ in the right upper abdomen"
    assert templates[0].modality == "CT"
    assert reopened.templates("spleen")[0].text == "spleen"


def coded_case(seed: int, name: str, terminology: str) -> tuple[Volume, Segmentation]:
    """`case(seed)` with its liver renamed `name` and coded `terminology`."""
    image, segmentation = case(seed)
    liver = segmentation.get("Liver")
    liver.name, liver.terminology = name, terminology
    return image, segmentation


def test_templates_match_by_terminology_then_by_name(tmp_path):
    bank = TemplateBank.create(tmp_path)
    bank.add(*coded_case(0, "Leber", LEBER), case_id="german")  # localized name, the liver's code
    bank.add(*coded_case(1, "Liver", SPLEEN), case_id="miscoded")  # named liver, coded spleen
    bank.add(*coded_case(2, "liver", ""), case_id="uncoded")  # no code: its name decides
    reopened = TemplateBank.open(tmp_path)
    assert reopened.entries[0].segments[0]["terminology"] == LEBER
    assert [t.case_id for t in reopened.templates("Liver", terminology=LIVER)] == ["german", "uncoded"]
    assert [t.case_id for t in reopened.templates("liver")] == ["miscoded", "uncoded"]  # no code asked: names
    assert reopened.templates("Liver", terminology=LIVER)[0].name == "Leber"


def test_a_bank_written_before_terminology_matches_by_name(tmp_path):
    bank = TemplateBank.create(tmp_path)
    bank.add(*case(0), case_id="old")
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    for segment in index["entries"][0]["segments"]:
        del segment["terminology"]
    (tmp_path / INDEX_NAME).write_text(json.dumps(index))
    assert [t.case_id for t in TemplateBank.open(tmp_path).templates("liver", terminology=LIVER)] == ["old"]


def test_unknown_structure_lists_names(tmp_path):
    bank = TemplateBank.create(tmp_path)
    bank.add(*case(0), case_id="a")
    with pytest.raises(BankError, match="no template named 'kidney' in .*; names: Liver, spleen"):
        bank.templates("kidney")


def test_empty_bank(tmp_path):
    with pytest.raises(BankError, match="the template bank is empty"):
        TemplateBank.create(tmp_path).templates("liver")


def test_missing_and_invalid_banks(tmp_path):
    with pytest.raises(BankError, match="not a template bank"):
        TemplateBank.open(tmp_path)
    (tmp_path / "bank.json").write_text("{not json")
    with pytest.raises(BankError, match="invalid bank index"):
        TemplateBank.open(tmp_path)
    (tmp_path / "bank.json").write_text(json.dumps({"version": 1, "entries": [
        {"id": "x", "image": "x.nrrd", "segmentation": "x.seg.nrrd", "modality": "", "segments": []}]}))
    with pytest.raises(BankError, match="case 'x' lists a missing file x.nrrd"):
        TemplateBank.open(tmp_path)


@pytest.mark.parametrize("index", ["[]", "3", '"bank"', "null"])
def test_an_index_that_is_not_a_json_object_is_a_bank_error(tmp_path, index):
    (tmp_path / "bank.json").write_text(index)
    with pytest.raises(BankError, match=r"invalid bank index \(a JSON \w+, not an object\)"):
        TemplateBank.open(tmp_path)


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_a_bank_is_not_created_on_or_under_a_file(tmp_path, where):
    (tmp_path / "notes.txt").write_text("x")
    root = tmp_path / "notes.txt" if where == "file" else tmp_path / "notes.txt" / "bank"
    with pytest.raises(BankError, match="notes.txt is a file, not a folder"):
        TemplateBank.create(root)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_bad_cases_rejected_before_writing(tmp_path):
    bank = TemplateBank.create(tmp_path)
    image, segmentation = case(0)
    segmentation.add("empty", np.zeros(image.shape, bool))
    with pytest.raises(BankError, match="segment 'empty' is empty"):
        bank.add(image, segmentation, case_id="c")
    shifted = Volume(image.array, image.spacing, image.origin + 5, image.direction)
    with pytest.raises(GeometryError, match="segmentation of case c"):
        bank.add(shifted, case(0)[1], case_id="c")
    nan_image = image.with_array(np.full(image.shape, np.nan, np.float32))
    with pytest.raises(Exception, match="image of case c contains"):
        bank.add(nan_image, case(0)[1], case_id="c")
    with pytest.raises(BankError, match="case id"):
        bank.add(*case(0), case_id="../evil")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank.json"]
    bank.add(*case(0), case_id="c")
    with pytest.raises(BankError, match="already in the bank"):
        bank.add(*case(0), case_id="c")


def test_template_validation():
    image = Volume(np.zeros((2, 4, 4)))
    with pytest.raises(BankError, match="the mask is empty"):
        Template(image, np.zeros((2, 4, 4)), "liver", case_id="a")
    with pytest.raises(BankError, match="does not match its image"):
        Template(image, np.ones((2, 4, 5)), "liver", case_id="a")
