"""`vessa bank` and `vessa evaluate` through the real command line entry point."""

import csv
import math

import numpy as np
import pytest

from vessa.cli import main
from vessa.evaluate import score_masks
from vessa.io import Segmentation, TemplateBank, Volume, write_segmentation, write_volume


def write_case(folder, name: str, shift: int = 0):
    image = Volume(np.random.default_rng(0).normal(size=(5, 20, 20)).astype(np.float32), (0.5, 0.5, 2.0))
    segmentation = Segmentation.on_grid(image)
    mask = np.zeros(image.shape, bool)
    mask[1:4, 5 + shift:12 + shift, 6:14] = True
    segmentation.add("liver", mask)
    return write_volume(image, folder / f"{name}.nrrd"), write_segmentation(segmentation, folder / f"{name}.seg.nrrd")


def test_bank_create_add_list(tmp_path, capsys):
    image, seg = write_case(tmp_path, "case1")
    bank = tmp_path / "bank"
    assert main(["bank", "create", str(bank)]) == 0
    assert main(["bank", "add", str(bank), "--image", str(image), "--segmentation", str(seg), "--modality", "CT",
                 "--describe", "liver=large abdominal organ"]) == 0
    assert main(["bank", "list", str(bank)]) == 0
    out = capsys.readouterr().out
    assert "added case case1 with 1 segments: liver" in out and "1 cases, 1 structures" in out
    template = TemplateBank.open(bank).templates("liver")[0]
    assert template.text == "large abdominal organ" and template.modality == "CT"


def test_bank_errors_are_one_line(tmp_path, capsys):
    assert main(["bank", "list", str(tmp_path)]) == 2
    assert main(["bank", "create", str(tmp_path / "b")]) == 0
    assert main(["bank", "add", str(tmp_path / "b"), "--image", "nope.nrrd", "--segmentation", "x.seg.nrrd"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("vessa bank: error:") and "not a template bank" in err[0]
    assert "image not found: nope.nrrd" in err[1]


def test_score_masks_known_answer():
    reference = np.zeros((1, 10, 10), bool)
    reference[0, 0:4, 0:5] = True  # 20 voxels
    predicted = np.zeros_like(reference)
    predicted[0, 0:2, 0:5] = True  # 10 voxels, all inside
    dice, hd95 = score_masks(predicted, reference, (1.0, 2.0, 1.0))
    assert dice == pytest.approx(2 * 10 / 30)
    assert hd95 == pytest.approx(4.0)  # rows 2..3 are 2 rows of 2 mm from the prediction
    assert score_masks(np.zeros_like(reference), reference, (1, 1, 1)) == (0.0, math.inf)


def test_evaluate_cli_writes_csv_and_plot(tmp_path, capsys):
    _, ref = write_case(tmp_path, "ref")
    (tmp_path / "pred").mkdir()
    _, pred = write_case(tmp_path / "pred", "ref", shift=1)
    csv_path, plot = tmp_path / "s.csv", tmp_path / "s.png"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--csv", str(csv_path),
                 "--plot", str(plot)]) == 0
    rows = list(csv.DictReader(csv_path.read_text().splitlines()))
    assert rows[0]["structure"] == "liver"
    assert float(rows[0]["dice"]) == pytest.approx(2 * 6 / 14)  # 7-row blocks shifted by one row
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert "mean Dice 0.857" in capsys.readouterr().out


def test_evaluate_without_csv_writes_no_file(tmp_path, monkeypatch, capsys):
    _, ref = write_case(tmp_path, "ref")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scores.csv").write_text("someone else's scores")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["evaluate", "--pred", str(ref), "--ref", str(ref)]) == 0
    assert (tmp_path / "scores.csv").read_text() == "someone else's scores"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert capsys.readouterr().out.strip().endswith("mean Dice 1.000 over 1")


def test_evaluate_writes_csv_and_plot_as_one_set(tmp_path, monkeypatch):
    import matplotlib.figure

    _, ref = write_case(tmp_path, "ref")
    csv_path = tmp_path / "s.csv"
    csv_path.write_text("old")

    def failing_savefig(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", failing_savefig)
    with pytest.raises(OSError, match="disk full"):
        main(["evaluate", "--pred", str(ref), "--ref", str(ref), "--csv", str(csv_path),
              "--plot", str(tmp_path / "s.png")])
    assert csv_path.read_text() == "old" and not (tmp_path / "s.png").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_evaluate_grid_mismatch_names_the_reference(tmp_path, capsys):
    _, ref = write_case(tmp_path, "ref")
    other = Volume(np.zeros((5, 20, 20), np.float32), (0.5, 0.5, 2.0), origin=(0.0, 0.0, 1.0))
    moved = Segmentation.on_grid(other)
    moved.add("liver", np.ones(other.shape, bool))
    pred = write_segmentation(moved, tmp_path / "pred.seg.nrrd")
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref)]) == 2
    error = capsys.readouterr().err.strip()
    assert "pred: predicted segmentation: geometry differs from the reference's (origin [0.0, 0.0, 1.0] vs" in error
    assert "image" not in error


def test_hausdorff_distance_raises_no_monai_deprecation_warning():
    import warnings

    mask = np.zeros((3, 8, 8), bool)
    mask[1, 2:5, 2:5] = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score_masks(mask, np.roll(mask, 1, axis=2), (1.0, 1.0, 1.0))
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == []
