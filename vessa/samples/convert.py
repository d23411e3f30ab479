"""Conversion of the pyradiomics and stardist sample files into NRRD + named `.seg.nrrd`.

Each converter reads an unpacked archive (`tree`), writes into `out` and yields one
`SampleCase` per converted case. Images are read and written with `vessa.io`, so origin,
spacing and direction stay exactly those of the source files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vessa.errors import InputError
from vessa.io import Segment, Segmentation, Volume, read_volume, write_segmentation, write_volume
from vessa.samples.manifest import SampleCase

PYRADIOMICS_DATA = "pyradiomics-3.0.1/data"
PYRADIOMICS_CASES = {"brain1": "MR", "brain2": "MR", "breast1": "MR", "lung1": "CT", "lung2": "CT"}
STARDIST_IMAGES = "stardist/data/images"
STARDIST_CASES = {
    "nuclei2d": ("img2d.tif", "mask2d.tif",
                 "fluorescence nuclei from the 2018 Kaggle Data Science Bowl, manual instance masks"),
    "nuclei3d": ("img3d.tif", "mask3d.tif",
                 "synthetic 3D nuclei (stardist's test volume), instance masks"),
}


def save_case(
    out: Path,
    case_id: str,
    image: Path,
    segmentation: Segmentation,
    modality: str,
    description: str,
    split: str = "train",
    instances: Volume | None = None,
) -> SampleCase:
    """Write `<case_id>.seg.nrrd` (and `<case_id>.instances.nrrd`) into `out`; return the case."""
    seg_path = write_segmentation(segmentation, out / f"{case_id}.seg.nrrd")
    instances_path = None if instances is None else write_volume(instances, out / f"{case_id}.instances.nrrd")
    return SampleCase(case_id, image, seg_path, modality, tuple(segmentation.names()), split, description,
                      instances_path)


def binary_mask(label: Volume, path: Path) -> np.ndarray:
    """The voxels of a 0/1 mask volume that are 1; other values raise InputError naming `path`."""
    values = set(np.unique(label.array).tolist())
    if not values <= {0, 1}:
        raise InputError(f"{path}: expected a 0/1 mask, found values {sorted(values)[:10]}")
    return label.array == 1


def convert_pyradiomics(tree: Path, out: Path) -> Iterator[SampleCase]:
    """pyradiomics' five test cases: MR/CT image + one "lesion" segment each."""
    data = tree / PYRADIOMICS_DATA
    for case_id, modality in PYRADIOMICS_CASES.items():
        image = read_volume(data / f"{case_id}_image.nrrd")
        label_path = data / f"{case_id}_label.nrrd"
        label = read_volume(label_path)
        image.require_same_grid(label, str(label_path))
        segmentation = Segmentation.on_grid(image, [Segment("lesion", binary_mask(label, label_path))])
        image_path = write_volume(image, out / f"{case_id}.nrrd")
        yield save_case(out, case_id, image_path, segmentation, modality,
                        f"pyradiomics 3.0.1 test case {case_id} ({modality}) with its lesion mask")


def convert_stardist(tree: Path, out: Path) -> Iterator[SampleCase]:
    """stardist's nuclei images: a binary "nucleus" segment plus the instance label volume."""
    images = tree / STARDIST_IMAGES
    for case_id, (image_name, mask_name, description) in STARDIST_CASES.items():
        image = read_volume(images / image_name)
        instances = read_volume(images / mask_name)
        image.require_same_grid(instances, str(images / mask_name))
        segmentation = Segmentation.on_grid(image, [Segment("nucleus", instances.array > 0)])
        image_path = write_volume(image, out / f"{case_id}.nrrd")
        count = len(np.unique(instances.array)) - 1
        yield save_case(out, case_id, image_path, segmentation, "microscopy",
                        f"{description} ({count} nuclei; pixel spacing 1, unitless)", instances=instances)
