"""Small on-disk cohorts for the training tests, written with vessa.io (imported by conftest and tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vessa.io import Segmentation, Volume, write_segmentation, write_volume

SIZE = 32


def blob_case(root: Path, name: str, seed: int, depth: int = 4, spacing=(1.0, 1.0, 2.0)) -> tuple[str, str]:
    """Write a noisy bright disc (the "blob") and its .seg.nrrd; returns the file names."""
    rng = np.random.default_rng(seed)
    _, y, x = np.mgrid[:depth, :SIZE, :SIZE]
    centre = SIZE // 2 + rng.integers(-4, 5, size=2)
    mask = (y - centre[0]) ** 2 + (x - centre[1]) ** 2 < (6 + seed % 3) ** 2
    image = Volume((mask * 100.0 + rng.normal(0, 15, mask.shape)).astype(np.float32), spacing=spacing)
    write_volume(image, root / f"{name}.nrrd")
    segmentation = Segmentation.on_grid(image)
    segmentation.add("blob", mask)
    segmentation.add("ring", mask ^ ((y - centre[0]) ** 2 + (x - centre[1]) ** 2 < 3 ** 2))
    write_segmentation(segmentation, root / f"{name}.seg.nrrd")
    return f"{name}.nrrd", f"{name}.seg.nrrd"


def write_manifest(root: Path, cases: list[dict], structures=("blob", "ring")) -> Path:
    path = root / "manifest.json"
    path.write_text(json.dumps({"version": 1, "structures": list(structures), "cases": cases}))
    return path
