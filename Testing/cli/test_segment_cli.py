"""`vessa segment` through the command line: output on the input's exact grid, clear errors."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from vessa.cli import main
from vessa.io import Segmentation, TemplateBank, Volume, read_segmentation, read_volume, write_volume
from vessa.model.assistant import TemplateAssistant
from vessa.model.checkpoint import save_checkpoint
from vessa.model.config import ModelConfig


def case(seed: int) -> tuple[Volume, Segmentation]:
    rng = np.random.default_rng(seed)
    image = Volume(rng.normal(100, 5, (4, 30, 24)).astype(np.float32), (0.8, 0.7, 3.0), (5.0, -3.0, 12.0),
                   Rotation.from_rotvec([0.2, 0.1, -0.3]).as_matrix())
    mask = np.zeros(image.shape, bool)
    mask[1:3, 8:20, 6:16] = True
    image.array[mask] += 50
    segmentation = Segmentation.on_grid(image)
    segmentation.add("box", mask)
    return image, segmentation


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("segment")
    torch.manual_seed(0)
    # Random weights: the command's plumbing and geometry are under test, not the segmentation.
    checkpoint = save_checkpoint(TemplateAssistant(ModelConfig(sam2_config="half_tiny", image_size=128)),
                                 folder / "random.pt")
    bank = TemplateBank.create(folder / "bank")
    bank.add(*case(1), case_id="t1", modality="MR")
    target = write_volume(case(2)[0], folder / "target.nrrd")
    return {"checkpoint": str(checkpoint), "bank": str(folder / "bank"), "target": str(target), "dir": folder}


def test_segment_writes_the_structure_on_the_input_grid(files, capsys):
    out = files["dir"] / "out.seg.nrrd"
    probability = files["dir"] / "probability.nrrd"
    code = main(["segment", "--image", files["target"], "--bank", files["bank"], "--text", "box", "--out", str(out),
                 "--probability-out", str(probability), "--checkpoint", files["checkpoint"], "--device", "cpu"])
    assert code == 0
    segmentation = read_segmentation(out)
    target = read_volume(files["target"])
    assert segmentation.names() == ["box"]
    np.testing.assert_allclose(segmentation.geometry().ijk_to_lps(), target.ijk_to_lps(), atol=1e-9)
    probabilities = read_volume(probability).array
    assert probabilities.shape == target.shape and probabilities.min() >= 0 and probabilities.max() <= 1
    assert "'box'" in capsys.readouterr().out


def test_segment_sparse_pass_in_float32_says_how_many_slices_it_decoded(files, capsys):
    out = files["dir"] / "sparse.seg.nrrd"
    code = main(["segment", "--image", files["target"], "--bank", files["bank"], "--text", "box", "--out", str(out),
                 "--checkpoint", files["checkpoint"], "--device", "cpu", "--slice-step", "2", "--precision", "float32"])
    assert code == 0 and read_segmentation(out).names() == ["box"]
    decoded = int(capsys.readouterr().out.split(" of 4 slices decoded")[0].rsplit(" ", 1)[1])
    assert 3 <= decoded <= 4  # slices 0, 2 and 3 first (every 2nd and the last); slice 1 if 0 or 2 shows the box


@pytest.mark.parametrize(("extra", "message"), [
    (["--text", "liver"], "no template named 'liver'"),
    (["--text", "  "], "no template named"),
    (["--text", "box", "--description", " "], "text prompt is empty"),
    (["--text", "box", "--threshold", "1.5"], "threshold 1.5"),
    (["--text", "box", "--slice-step", "0"], "slice step 0 must be >= 1"),
])
def test_segment_bad_input_is_one_line_and_writes_nothing(files, capsys, extra, message):
    out = files["dir"] / "bad.seg.nrrd"
    code = main(["segment", "--image", files["target"], "--bank", files["bank"], "--out", str(out),
                 "--checkpoint", files["checkpoint"], "--device", "cpu", *extra])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.startswith("vessa segment: error:") and message in error
    assert len(error.splitlines()) == 1 and not out.exists()


def test_segment_missing_image_and_wrong_output_suffix(files, capsys):
    assert main(["segment", "--image", "missing.nrrd", "--bank", files["bank"], "--text", "box",
                 "--out", "x.seg.nrrd"]) == 2
    assert "image not found: missing.nrrd" in capsys.readouterr().err
    assert main(["segment", "--image", files["target"], "--bank", files["bank"], "--text", "box",
                 "--out", str(files["dir"] / "x.nrrd")]) == 2
    assert "written as .seg.nrrd" in capsys.readouterr().err
