"""Demons on MIND descriptors: the deformable step for a template whose grey levels no map makes the target's.

ITK's demons compare grey levels, so they cannot follow a template of another contrast (another
sequence, another scanner's curve, a non-monotonic map). MIND, the modality independent
neighbourhood descriptor (Heinrich et al., Medical Image Analysis 16(7), 2012), describes each
voxel by how alike patches around it are, over the local variance: the same anatomy gives the
same descriptor whatever its grey levels are. The layout is MIND's self-similarity context
(MIND-SSC, Heinrich et al., MICCAI 2013): the 12 pairs of the six face neighbours that are a
face diagonal apart, each channel the patch distance between the two neighbours of a pair (not
between the voxel and a neighbour, as the first MIND's six channels: those weigh the centre
voxel, noise included, in every channel). Thirion's demons run on the 12 descriptor channels
(the forces summed over channels, the symmetric gradient of both images), each update capped at
`MAX_STEP_VOXELS`, the field smoothed by a Gaussian of `sigma` voxels after every iteration
(elastic regularisation, as ITK's demons), coarse to fine (`LEVELS`).

Fitted on AAL and JHU regions of Colin27 under new grey-level curves (not on the benchmark's
Harvard-Oxford and Brodmann regions; `benchmarks/bench_registration.py`), with the first MIND's
six channels: on the 3 mm grid, sigma 1.0 and 30 iterations a level scored Dice 0.754 against
the affine step's 0.691 (60 iterations: 0.753; sigma 0.75: 0.753, 1.5: 0.739); on a 2 mm grid
0.794 (sigma 0.75: 0.800, 1.5: 0.769). Then on six grey-level curves (seeds 4-9; two were too
few: a method that gained on two lost on four more), Colin27 template: patches of 0.8 voxels,
sigma 1: 0.761; a finer patch and less smoothing, 0.6 voxels and sigma 0.75 (the defaults):
0.787, above it on all 12 targets (0.5 / 0.75: 0.790; 0.7 / 0.75: 0.779; 0.6 / 0.5: 0.775;
0.6 / 1: 0.770; 45 iterations: 0.790 in 1.6x the time; a third, 4x-shrunk level: 0.759).
Then a finer grid for this step alone (`RegistrationConfig.mind_resolution_mm`, the same
settings in voxels, so smaller patches in mm), same twelve targets: 1.5 mm (the default) 0.7995
against 2 mm's 0.7865, higher on 11 of 12, 22.6 against 6.3 s per registration; 1.25 mm 0.8051
in 51 s. Then the self-similarity context (12 channels) on the same 1.5 mm grid and settings
(prototype, affine once per target): 0.8060 against 0.7995, higher on 9 of 12 targets; its 12
channels cut to their 6 principal components, 0.7556 against 0.7656 (and the six channels'
0.7539) on the 5 targets tried; the self-similarity context at 2 mm, 0.705 against the six
channels' 0.714 at 1.5 mm on 5 targets; the six channels computed on a 1 mm grid and resampled
to the 1.5 mm one, 0.851 / 0.859 (patches of 0.9 / 0.6 mm) against 0.861 on 7. With the
shipped script (`--sets contrast --seeds 4 5 6 7 8 9`, both development templates): 0.791 ->
0.799, 26.2 -> 28.4 s per registration (`symmetric_forces` summing channel by channel pays
for the 12 channels). Held out (benchmarks/RESULTS.md (b)): 0.931 -> 0.932 with one template.
"""

from __future__ import annotations

import time

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from scipy import ndimage

from vessa.priors.slice_flow import symmetric_forces

NEIGHBOURS = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))
PAIRS = tuple((a, b) for i, a in enumerate(NEIGHBOURS) for b in NEIGHBOURS[i + 1 :]
              if sum(x * y for x, y in zip(a, b, strict=True)) == 0)  # the 12 pairs a face diagonal apart
PATCH_SIGMA = 0.6  # voxels of the registration grid: a Gaussian patch of about 0.9 mm on the 1.5 mm grid
LEVELS = (2, 1)  # shrink factors, coarse to fine
MAX_STEP_VOXELS = 0.5


def mind_descriptor(array: np.ndarray, patch_sigma: float = PATCH_SIGMA) -> np.ndarray:
    """(12, *shape) float32: MIND-SSC of a 3D array (module docstring), each voxel's largest channel 1."""
    image = np.asarray(array, np.float32)
    distances = np.stack([ndimage.gaussian_filter((_edge_padded(image, a) - _edge_padded(image, b)) ** 2,
                                                  patch_sigma, mode="nearest") for a, b in PAIRS])
    variance = distances.mean(axis=0)
    mean = float(variance.mean())
    variance = np.clip(variance, 1e-3 * mean + 1e-12, 1e3 * mean + 1e-12)
    descriptor = np.exp(-distances / variance)
    return (descriptor / descriptor.max(axis=0, keepdims=True)).astype(np.float32)


def _edge_padded(image: np.ndarray, offset: tuple[int, int, int]) -> np.ndarray:
    """`image` moved by one voxel along `offset` (value at x: image[x + offset]), edges repeated."""
    padded = np.pad(image, 1, mode="edge")
    return padded[tuple(slice(1 + o, 1 + o + n) for o, n in zip(offset, image.shape, strict=True))]


def mind_demons(fixed: sitk.Image, aligned: sitk.Image, iterations: int, sigma: float, deadline: float,
                patch_sigma: float = PATCH_SIGMA) -> tuple[sitk.DisplacementFieldTransform, bool]:
    """Demons on MIND (patches of `patch_sigma` voxels) from `aligned` (the template after the
    affine step, on `fixed`'s grid) to `fixed`: (the displacement field, stopped at `deadline`).
    The field maps fixed points to aligned ones, as ITK's demons' does, so it composes after
    the affine transform."""
    fixed_array, aligned_array = sitk.GetArrayFromImage(fixed), sitk.GetArrayFromImage(aligned)
    field, stopped = None, False
    for shrink in LEVELS:
        target = torch.from_numpy(mind_descriptor(_shrunk(fixed_array, shrink), patch_sigma))
        moving = torch.from_numpy(mind_descriptor(_shrunk(aligned_array, shrink), patch_sigma))
        field = _resized_field(field, target.shape[1:])
        target_gradient = _gradient(target[None])[0]
        for _ in range(iterations):
            if time.perf_counter() > deadline:
                stopped = True
                break
            warped = _warp(moving, field)
            step = symmetric_forces(target[None], warped[None], target_gradient[None], _gradient)[0]
            length = torch.sqrt((step * step).sum(dim=0, keepdim=True))  # torch.linalg.norm over dim 0: 5x slower
            step = step * torch.clamp(MAX_STEP_VOXELS / (length + 1e-9), max=1.0)
            field = torch.from_numpy(ndimage.gaussian_filter((field + step).numpy(), (0, sigma, sigma, sigma),
                                                             mode="nearest"))
        if stopped:
            break
    field = _resized_field(field, fixed_array.shape)
    return _to_transform(field.numpy(), fixed), stopped


def _gradient(images: torch.Tensor) -> torch.Tensor:
    """[n, 3, c, *spatial]: the gradients of `images` [n, c, *spatial] along the array's axes."""
    return torch.stack(torch.gradient(images, dim=(2, 3, 4)), dim=1)


def _shrunk(array: np.ndarray, shrink: int) -> np.ndarray:
    """`array` zoomed by 1 / `shrink` (linear), itself at 1."""
    return array if shrink == 1 else ndimage.zoom(array, 1 / shrink, order=1)


def _resized_field(field: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
    """A (3, *shape) displacement in voxels: zero where there is none yet, else `field` resampled
    and its vectors scaled to the new grid."""
    if field is None:
        return torch.zeros((3, *shape))
    if tuple(field.shape[1:]) == tuple(shape):
        return field
    scale = torch.tensor([new / old for new, old in zip(shape, field.shape[1:], strict=True)]).view(3, 1, 1, 1)
    return F.interpolate(field[None], size=tuple(shape), mode="trilinear", align_corners=True)[0] * scale


def _warp(image: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """(C, D, H, W) `image` sampled at x + field(x) (field in voxels, array axis order), edges repeated."""
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in image.shape[1:]], indexing="ij")
    normalised = [(axis + shift) / max(n - 1, 1) * 2 - 1
                  for axis, shift, n in zip(axes, field, image.shape[1:], strict=True)]
    grid = torch.stack(normalised[::-1], dim=-1)[None]  # grid_sample wants (x, y, z)
    return F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0]


def _to_transform(field: np.ndarray, grid: sitk.Image) -> sitk.DisplacementFieldTransform:
    """A SimpleITK displacement field transform (physical mm) from a voxel field in array axis order."""
    voxels = field[::-1] * np.asarray(grid.GetSpacing())[:, None, None, None]  # (x, y, z) in mm along the axes
    physical = np.einsum("ij,j...->i...", np.asarray(grid.GetDirection()).reshape(3, 3), voxels)
    image = sitk.GetImageFromArray(np.moveaxis(physical, 0, -1).astype(np.float64), isVector=True)
    image.CopyInformation(grid)
    return sitk.DisplacementFieldTransform(image)
