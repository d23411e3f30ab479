"""`vessa segment` through the command line: output on the input's exact grid, clear errors,
outputs written as one set, warnings for results that cannot mean much."""

import os
import stat

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from vessa.cli import main
from vessa.io import Segmentation, Template, TemplateBank, Volume, read_segmentation, read_volume, write_volume
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
    (["--text", "  "], "--text is empty"),
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


def run_segment(files, out, *extra) -> int:
    return main(["segment", "--image", files["target"], "--bank", files["bank"], "--text", "box", "--out", str(out),
                 "--checkpoint", files["checkpoint"], "--device", "cpu", *extra])


def old_outputs(folder):
    """An earlier run's segmentation and probability map, and the folder's content as (name, bytes, mode)."""
    out, probability = folder / "old.seg.nrrd", folder / "old_probability.nrrd"
    out.write_bytes(b"old segmentation")
    probability.write_bytes(b"old probabilities")
    return out, probability, lambda: sorted((p.name, p.is_file() and p.read_bytes(), p.stat().st_mode)
                                            for p in folder.iterdir())


def test_a_bad_probability_output_is_found_before_any_work(files, tmp_path, capsys):
    out, _, content = old_outputs(tmp_path)
    (tmp_path / "folder.nrrd").mkdir()
    before = content()
    for bad in (tmp_path / "folder.nrrd", tmp_path / "old.seg.nrrd" / "p.nrrd", tmp_path / "p.png", out):
        assert run_segment(files, out, "--probability-out", str(bad)) == 2
        error = capsys.readouterr().err
        assert error.startswith("vessa segment: error: --probability-out") and len(error.splitlines()) == 1
    assert content() == before


def test_an_interrupt_while_writing_keeps_the_old_outputs_together(files, tmp_path, monkeypatch, capsys):
    import vessa.io

    out, probability, content = old_outputs(tmp_path)
    before = content()

    def interrupted(volume, path, compress=True):
        raise KeyboardInterrupt  # Ctrl-C after the segmentation was written, before the probabilities

    monkeypatch.setattr(vessa.io, "write_volume", interrupted)
    assert run_segment(files, out, "--probability-out", str(probability)) == 130
    assert "interrupted (SIGINT)" in capsys.readouterr().err
    assert content() == before  # neither output replaced, no temporary file left


def test_a_read_only_output_is_refused_and_a_writable_one_keeps_its_mode(files, tmp_path, capsys):
    out, probability, content = old_outputs(tmp_path)
    os.chmod(out, 0o444)
    before = content()
    assert run_segment(files, out) == 2
    assert "--out " + str(out) + ": the file is read-only" in capsys.readouterr().err
    assert content() == before
    os.chmod(out, 0o640)
    os.chmod(probability, 0o604)
    assert run_segment(files, out, "--probability-out", str(probability)) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o640 and stat.S_IMODE(probability.stat().st_mode) == 0o604
    assert read_segmentation(out).names() == ["box"]


def test_an_empty_template_mask_names_the_segmentation_file(files, tmp_path, capsys):
    image, segmentation = case(3)
    segmentation.segments[0].mask[:] = False
    image_path = write_volume(image, tmp_path / "t.nrrd")
    seg_path = tmp_path / "t.seg.nrrd"
    from vessa.io import write_segmentation

    write_segmentation(segmentation, seg_path)
    code = main(["segment", "--image", files["target"], "--templates", f"{image_path},{seg_path}", "--text", "box",
                 "--out", str(tmp_path / "o.seg.nrrd"), "--checkpoint", files["checkpoint"], "--device", "cpu"])
    assert code == 2
    assert f"template segmentation {seg_path}: segment 'box' is empty" in capsys.readouterr().err


def test_a_constant_ct_with_an_mr_template_and_a_coarse_step_is_warned(files, tmp_path, capsys):
    constant = read_volume(files["target"]).with_array(np.full((4, 30, 24), -1000, np.int16))
    image = write_volume(constant, tmp_path / "air.nrrd")
    code = main(["segment", "--image", str(image), "--bank", files["bank"], "--text", "box",
                 "--out", str(tmp_path / "o.seg.nrrd"), "--checkpoint", files["checkpoint"], "--device", "cpu",
                 "--slice-step", "3"])
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vessa segment: warning:")]
    assert code == 0 and len(warnings) == 3
    assert "template t1/box is MR but air.nrrd is CT; using it anyway" in warnings[0]
    assert "the image is constant (every voxel is -1000)" in warnings[1]
    assert "a slice step of 3 exceeds the structure's extent" in warnings[2]  # the box spans 2 slices of 3 mm


def test_an_empty_result_is_warned(monkeypatch):
    import vessa.model
    from vessa.model.volume_segmenter import SegmentResult
    from vessa.segment import segment_volume

    image, segmentation = case(4)
    template = Template(image, segmentation.segments[0].mask, "box", case_id="t")

    class FindsNothing:
        def segment(self, image, templates, text, modality=""):
            return SegmentResult(image.with_array(np.zeros(image.shape, np.float32)), np.zeros(4), 0.0, 0, 4, "cpu")

    monkeypatch.setattr(vessa.model, "load_segmenter", lambda *args, **kwargs: FindsNothing())
    output = segment_volume(image, [template], "box")
    assert output.warnings == ["the result is empty: no voxel of 'box' reaches probability 0.5 "
                               "(the model did not find it)"]
