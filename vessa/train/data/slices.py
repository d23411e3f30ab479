"""2D slices of a cohort's volumes, streamed from disk, as square tensors for training.

Each volume is read lazily (vessa.io) when one of its slices is first asked for, scaled to
[0, 1] between its 0.5th and 99.5th intensity percentiles (MONAI), and kept in a small LRU
cache. Slices are taken along k (the array's first axis) and resized to image_size x
image_size (bilinear with antialiasing for images, nearest for labels; aspect ratio and
spacing are not preserved). Items are a pure function of the index, so batches can be
reproduced on resume (see vessa.train.data.batches).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from monai.transforms import ScaleIntensityRangePercentiles
from monai.utils import convert_to_numpy
from torch.utils.data import Dataset

from vessa.errors import JobError, VessaError
from vessa.io import read_volume
from vessa.train.data.cohort import Cohort, CohortCase, read_label_map

_normalise = ScaleIntensityRangePercentiles(lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True)


def normalize_intensities(array: np.ndarray) -> np.ndarray:
    """A volume scaled to float32 [0, 1] between its 0.5th and 99.5th percentiles (training input)."""
    return convert_to_numpy(_normalise(np.asarray(array, dtype=np.float32)), dtype=np.float32)


def volume_depth(path) -> int:
    """The number of k-slices of the image at `path`, from its header only."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise JobError(f"{path}: unreadable image header") from None
    size = reader.GetSize()
    return int(size[2]) if len(size) >= 3 else 1


def resize_slices(images: torch.Tensor, labels: torch.Tensor | None, size: int):
    """Resize [N,1,H,W] images (bilinear, antialiased) and labels (nearest) to size x size."""
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    if labels is not None:
        labels = F.interpolate(labels.float(), size=(size, size), mode="nearest-exact").long()
    return images, labels


class SliceDataset(Dataset):
    """Every k-slice of `cases` as {"image": [1,S,S] float32, "label": [1,S,S] int64, "case", "slice"}.

    `label` (0 background, c for structures[c-1]) is present when `labelled` is True; "case"
    is the index into `cases`.
    """

    def __init__(self, cohort: Cohort, cases: list[CohortCase], structures: list[str], image_size: int,
                 labelled: bool = True, cache_size: int = 4):
        if labelled and any(not c.labelled for c in cases):
            raise JobError(f"{cohort.path}: a labelled slice dataset got unlabelled cases")
        self.cohort = cohort
        self.cases = list(cases)
        self.structures = list(structures)
        self.image_size = image_size
        self.labelled = labelled
        self.cache_size = cache_size
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()
        self.index = [(c, k) for c, case in enumerate(self.cases) for k in range(volume_depth(case.image))]

    def __len__(self) -> int:
        return len(self.index)

    def volume(self, case_index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The normalised float32 image (k, j, i) and uint8 labels (or None) of a case, cached."""
        if case_index in self._cache:
            self._cache.move_to_end(case_index)
            return self._cache[case_index]
        case = self.cases[case_index]
        try:
            image = read_volume(case.image)
        except VessaError as error:
            raise JobError(str(error)) from None
        array = normalize_intensities(image.array)
        labels = read_label_map(case, self.cohort, self.structures, image) if self.labelled else None
        self._cache[case_index] = (array, labels)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return array, labels

    def _slices(self, case_index: int, ks: slice | list[int]) -> dict[str, torch.Tensor]:
        array, labels = self.volume(case_index)
        images = torch.from_numpy(np.ascontiguousarray(array[ks]))[:, None]
        label_tensor = None if labels is None else torch.from_numpy(np.ascontiguousarray(labels[ks]))[:, None]
        images, label_tensor = resize_slices(images, label_tensor, self.image_size)
        item = {"image": images}
        if label_tensor is not None:
            item["label"] = label_tensor
        return item

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        case_index, k = self.index[index]
        item = {key: value[0] for key, value in self._slices(case_index, [k]).items()}
        return {**item, "case": case_index, "slice": k}

    def case_slices(self, case_index: int) -> dict[str, torch.Tensor]:
        """All slices of one case: "image" [D,1,S,S] (and "label" [D,1,S,S]), for volume metrics."""
        return self._slices(case_index, slice(None))
