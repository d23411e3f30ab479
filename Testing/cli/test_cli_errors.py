"""Every refused `vessa` command, run as a real process: exit code 2, exactly one line on stderr
(no traceback), and nothing written or changed in the folder it runs in.

Each case runs in its own copy of one folder of inputs (images, template pairs, a bank, a
cancelled training job, ...), with that folder as the working directory, so outputs with
relative or default names would land there too; the test compares every entry's kind, size,
bytes, mode and modification time before and after.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vessa.io import Segmentation, TemplateBank, Volume, write_segmentation, write_volume

ROOT = Path(__file__).resolve().parents[2]
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal of --device cuda without a GPU")

SEGMENT = ["segment", "--image", "image.nrrd", "--templates", "tpl.nrrd,tpl.seg.nrrd", "--text", "box"]
SLICES = ["segment", "--image", "image.nrrd", "--slices", "tpl.seg.nrrd"]  # 'box' drawn on slices k = 1, 2
EVALUATE = ["evaluate", "--pred", "tpl.seg.nrrd", "--ref", "tpl.seg.nrrd"]


def case(name: str, argv: list[str], message: str, marks=()):
    """One refused command: its name, its arguments, and what its one line of error says."""
    return pytest.param(argv, message, id=name, marks=marks)


OUT = ["--out", "o.seg.nrrd"]
CASES = [
    case("segment --out is a folder", [*SEGMENT, "--out", "folder.seg.nrrd"], "--out folder.seg.nrrd: is a folder"),
    case("segment --out under a file", [*SEGMENT, "--out", "file.txt/o.seg.nrrd"], "file.txt is a file, not a folder"),
    case("segment --out read-only", [*SEGMENT, "--out", "readonly.seg.nrrd"], "the file is read-only"),
    case("segment --probability-out is a folder", [*SEGMENT, *OUT, "--probability-out", "folder.nrrd"],
         "--probability-out folder.nrrd: is a folder"),
    case("segment --probability-out under a file", [*SEGMENT, *OUT, "--probability-out", "file.txt/p.nrrd"],
         "file.txt is a file, not a folder"),
    case("segment --probability-out format", [*SEGMENT, *OUT, "--probability-out", "p.png"],
         "--probability-out p.png: unsupported image format"),
    case("segment --device cuda", [*SEGMENT, *OUT, "--device", "cuda"], "device 'cuda': this machine has no CUDA GPU",
         marks=NO_GPU),
    case("segment --text empty", [*SEGMENT[:-2], "--text", "", *OUT], "--text is empty"),
    case("segment empty template mask", [*SEGMENT[:4], "tpl.nrrd,empty.seg.nrrd", *SEGMENT[5:], *OUT],
         "template segmentation empty.seg.nrrd: segment 'box' is empty"),
    case("segment template on another grid", [*SEGMENT[:4], "tpl.nrrd,moved.seg.nrrd", *SEGMENT[5:], *OUT],
         "geometry differs from the image's (origin [0.0, 0.0, 7.0] vs [0.0, 0.0, 0.0])"),
    case("segment corrupt checkpoint", [*SEGMENT, *OUT, "--checkpoint", "corrupt.pt", "--device", "cpu"],
         "corrupt.pt: not a readable checkpoint"),
    case("segment --slices and --bank", [*SLICES, "--bank", "bank", *OUT],
         "--slices completes a drawn segment; --bank gives templates: use one or the other"),
    case("segment --slices with --text", [*SLICES, "--text", "box", *OUT],
         "--text is for segmenting from templates; with --slices the drawn segment is named by --segment"),
    case("segment --segment without --slices", [*SEGMENT, "--segment", "box", *OUT],
         "--segment only applies with --slices"),
    case("segment without templates or slices", ["segment", "--image", "image.nrrd", "--text", "box", *OUT],
         "give templates (--bank DIR or --templates IMAGE,SEG ...) with --text NAME, or a segmentation with the "
         "structure drawn on a few slices (--slices SEG.seg.nrrd)"),
    case("segment --slices --out is a folder", [*SLICES, "--out", "folder.seg.nrrd"],
         "--out folder.seg.nrrd: is a folder"),
    case("segment --slices --threshold", [*SLICES, *OUT, "--threshold", "1.5"],
         "--threshold 1.5 must be between 0 and 1"),
    case("segment --slices empty segment", [*SLICES[:4], "empty.seg.nrrd", *OUT],
         "--slices empty.seg.nrrd: segment 'box': the segment is empty: draw the structure on a few slices first"),
    case("segment --slices a 3D shape", [*SLICES[:4], "solid.seg.nrrd", *OUT],
         "--slices solid.seg.nrrd: segment 'box': the segment is already a 3D shape (not a few drawn slices of one "
         "orientation): nothing to complete"),
    case("segment --slices several segments", [*SLICES[:4], "two.seg.nrrd", *OUT],
         "--slices two.seg.nrrd has 2 segments ('box', 'other'): name the drawn one with --segment"),
    case("segment --slices unknown --segment", [*SLICES, "--segment", "liver", *OUT],
         "--slices tpl.seg.nrrd: no segment named 'liver'; segments: box"),
    case("segment --slices on another grid", [*SLICES[:4], "moved.seg.nrrd", *OUT],
         "--slices moved.seg.nrrd: geometry differs from the image's (origin [0.0, 0.0, 7.0] vs [0.0, 0.0, 0.0])"),
    case("segment --slices unknown SAM weights", [*SLICES, *OUT, "--sam-weights", "nosuch", "--device", "cpu"],
         "--sam-weights nosuch: nosuch: no such file, and not a known checkpoint"),
    case("evaluate --csv is a folder", [*EVALUATE, "--csv", "folder.csv"], "--csv folder.csv: is a folder"),
    case("evaluate --csv under a file", [*EVALUATE, "--csv", "file.txt/s.csv"], "file.txt is a file, not a folder"),
    case("evaluate --plot is a folder", [*EVALUATE, "--plot", "folder.png"], "--plot folder.png: is a folder"),
    case("evaluate reference on another grid", ["evaluate", "--pred", "moved.seg.nrrd", "--ref", "tpl.seg.nrrd"],
         "moved: predicted segmentation: geometry differs from the reference's"),
    case("demo --output is a file", ["demo", "--output", "file.txt"], "file.txt is a file, not a folder"),
    case("demo --output under a file", ["demo", "--output", "file.txt/demo"], "file.txt is a file, not a folder"),
    case("demo --output holds a read-only output", ["demo", "--output", "demo"],
         "demo/lung2_lesion.png: the file is read-only"),
    case("demo --target unknown", ["demo", "--target", "nosuch"], "--target 'nosuch': not a pyradiomics case"),
    case("demo --templates unknown", ["demo", "--templates", "nosuch"], "--templates 'nosuch': not a pyradiomics case"),
    case("demo --device cuda", ["demo", "--device", "cuda", "--output", "new-demo"],
         "device 'cuda': this machine has no CUDA GPU", marks=NO_GPU),
    case("bank create on a file", ["bank", "create", "file.txt"], "file.txt is a file, not a folder"),
    case("bank create under a file", ["bank", "create", "file.txt/bank"], "file.txt is a file, not a folder"),
    case("bank list of a non-object index", ["bank", "list", "badbank"],
         "invalid bank index (a JSON list, not an object)"),
    case("train over a cancelled run", ["train", "--spec", "spec.json"],
         "already holds checkpoints (newest: ckpt_step158.pt)"),
    case("train --recipe without --output", ["train", "--recipe", "starter"], "--recipe starter needs --output"),
    case("train --steps with --spec", ["train", "--spec", "spec.json", "--steps", "5"],
         "--steps only applies to --recipe; with --spec, set them in the spec file"),
    case("train spec on cuda", ["train", "--spec", "cuda_spec.json"],
         "device 'cuda' was requested but torch.cuda.is_available() is False", marks=NO_GPU),
]


def case_volume(origin=(0.0, 0.0, 0.0)) -> tuple[Volume, Segmentation]:
    image = Volume(np.random.default_rng(0).normal(100, 5, (4, 12, 10)).astype(np.float32), (1.0, 1.0, 3.0), origin)
    segmentation = Segmentation.on_grid(image)
    mask = np.zeros(image.shape, bool)
    mask[1:3, 3:8, 2:6] = True
    segmentation.add("box", mask)
    return image, segmentation


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The folder every case starts from."""
    folder = tmp_path_factory.mktemp("inputs")
    image, segmentation = case_volume()
    write_volume(image, folder / "image.nrrd")
    write_volume(image, folder / "tpl.nrrd")
    write_segmentation(segmentation, folder / "tpl.seg.nrrd")
    empty = Segmentation.on_grid(image)
    empty.add("box", np.zeros(image.shape, bool))
    write_segmentation(empty, folder / "empty.seg.nrrd")
    write_segmentation(case_volume(origin=(0.0, 0.0, 7.0))[1], folder / "moved.seg.nrrd")
    solid = Segmentation.on_grid(image)
    solid.add("box", np.pad(np.ones((4, 8, 6), bool), ((0, 0), (2, 2), (2, 2))))  # 4 x 8 x 6 voxels: a 3D shape
    write_segmentation(solid, folder / "solid.seg.nrrd")
    two = Segmentation.on_grid(image, list(segmentation.segments))
    two.add("other", segmentation.get("box").mask)
    write_segmentation(two, folder / "two.seg.nrrd")
    TemplateBank.create(folder / "bank").add(image, segmentation, "tpl", "MR")
    (folder / "badbank").mkdir()
    (folder / "badbank" / "bank.json").write_text("[]")
    for name in ("folder.seg.nrrd", "folder.nrrd", "folder.csv", "folder.png"):
        (folder / name).mkdir()
    (folder / "file.txt").write_text("a file")
    write_segmentation(segmentation, folder / "readonly.seg.nrrd")
    (folder / "demo").mkdir()
    (folder / "demo" / "lung2_lesion.png").write_bytes(b"an earlier demo's overlay")
    (folder / "corrupt.pt").write_bytes(b"\x80\x02" + bytes(range(40, 200)))
    spec = {"stage": "stage2", "method": "supervised", "manifest": "cohort.json", "output_dir": "job",
            "structures": ["box"], "steps": 8, "device": "cpu"}
    (folder / "spec.json").write_text(json.dumps(spec))
    (folder / "cuda_spec.json").write_text(json.dumps({**spec, "output_dir": "cuda_job", "device": "cuda"}))
    (folder / "job").mkdir()
    (folder / "job" / "ckpt_step158.pt").write_bytes(b"the cancelled run's checkpoint")
    (folder / "job" / "status.json").write_text('{"state": "cancelled", "step": 158, "pid": 1}\n')
    for path in (folder / "readonly.seg.nrrd", folder / "demo" / "lung2_lesion.png"):
        os.chmod(path, 0o444)
    return folder


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under `folder`: kind, mode, modification time, and a file's bytes."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        status = path.lstat()
        content = path.read_bytes() if path.is_file() else None
        entries[str(path.relative_to(folder))] = (path.is_dir(), status.st_mode, status.st_mtime_ns, content)
    return entries


@pytest.mark.parametrize(("argv", "message"), CASES)
def test_a_refused_command_exits_2_with_one_line_and_changes_nothing(inputs, tmp_path, argv, message):
    work = tmp_path / "work"
    shutil.copytree(inputs, work, symlinks=True)
    before = snapshot(work)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "vessa.cli", *argv], cwd=work, env=env, capture_output=True,
                          text=True, timeout=120)
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith(f"vessa {argv[0]}: error: "), done.stderr
    assert message in lines[0]
    assert "Traceback" not in done.stderr and "weights_only" not in done.stderr
    assert snapshot(work) == before
