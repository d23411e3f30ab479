"""Template -> target registration: a template's mask carried onto another subject's volume.

Each template image is registered onto the target with SimpleITK, on copies of both resampled
to `resolution_mm` (isotropic; registration needs the anatomy, not the finest detail). Every
setting in mm is for a human head's size: for a smaller volume (a small animal, a block) it is
multiplied by `anatomy_scale` (the longest side over 200 mm), so the grids keep as many voxels
across as a human head's. Grids are finer still where a volume is small, so that its shortest
side keeps `MIN_COARSE_VOXELS` voxels (a 44 mm
block at 3 mm left the metric too few voxels: ITK stopped with "All samples map outside moving
image buffer" on 2 of 11 such blocks), or coarser where the grid would exceed
`MAX_COARSE_VOXELS` (a whole CT):
1. affine (12 parameters), initialised by aligning the centres of mass of the grey levels,
   Mattes mutual information (so a template of another contrast still aligns) on at most
   `MAX_METRIC_SAMPLES` random voxels per level (20 % of a brain at 3 mm; on a 200-slice CT,
   20 % would be 480 k voxels a level), two levels (shrink 2, 1), regular-step gradient
   descent, on copies of both images clipped to their [0.5, 99.5] percentiles
   (`winsorize_percent`, as ANTs' `--winsorize-image-intensities` does: a strong bias field's
   bright corner, up to ten times the brain's grey level, otherwise took most of the metric's
   32 bins and left the anatomy in one or two). Should ITK give up (the images overlap too
   little, an image is blank), the centred start is kept and `Registration.failed` says why.
   For images other than CT it runs a second time on bias-flattened copies (`flatten_bias`:
   each voxel over its local mean, a Gaussian of `bias_sigma_mm`; then clipped alike), so that
   a smooth multiplicative bias field (MR coil shading, another scanner) cannot steer the
   metric; of the two, the one after which the histogram-matched template correlates best with
   the target is kept; where neither reaches `demons_min_correlation` (grey levels unlike the
   target's), the one under which the images share the most information in both views, the
   clipped images and the clipped flattened ones (`mutual_information` over every voxel, summed
   over the two pairs). Each view alone picked wrong somewhere: the clipped images' on two of
   the development set's six new contrasts (affine step alone, 19 pairs: 0.545), the flattened
   images' on the INIA19 macaque; the sum: 0.645 on those 19 pairs, as the better candidate of each
   pair (the old unclipped candidates and pick: 0.636). Whole registrations on the development
   set's new contrasts (its 24 pairs, before and after side by side under the same CPU load):
   0.758 before, 0.760 after; the INIA19 macaque, held out, where the affine step had failed:
   0.294 / 0.295 -> 0.834 / 0.834 (K = 1 / 3; RESULTS.md (b)), Colin27's 0.932 / 0.931 -> 0.949 / 0.948;
2. deformable (with templates of the same modality): where the affine-resampled template,
   histogram-matched, correlates with the target (Pearson r >= `demons_min_correlation` over
   their foreground: 0.94-0.99 for a same-contrast template), ITK's fast symmetric-forces demons
   on those grey levels (`demons_iterations`, elastic smoothing `demons_sigma` voxels);
   elsewhere (another contrast: about -0.1 for the new grey-level curve, where
   grey-level demons cost 0.1-0.2 Dice) demons on MIND descriptors (`vessa.priors.mind_demons`,
   `mind_iterations` a level, smoothing `mind_sigma`), which do not compare grey levels.
   Grey-level demons run on a finer grid than the affine step's, `deformable_resolution_mm`
   (the same bounds), MIND demons on a finer one still, `mind_resolution_mm` (up to
   `MAX_MIND_VOXELS`; on the development set's six grey-level curves 1.5 mm scored 0.791
   against 2 mm's 0.782, 26 against 10 s per registration; likely because MIND compares each
   voxel with its neighbours, which a coarse grid blurs together):
   on development targets (AAL and JHU regions of Colin27 under random elastic deformations,
   16 structure x template pairs each, never the benchmark's regions) demons at 2 mm with
   sigma 1 voxel scored Dice 0.931 / 0.853 on a mild / strong deformation against 0.913 /
   0.783 at 3 mm with sigma 1.5 (the affine step: 0.915 / 0.698), MIND demons across
   contrasts 0.794 against 0.754 (with finer patches and less smoothing since, 0.787 against
   0.761 on six grey-level curves: `vessa.priors.mind_demons`); 7.7 against 3.2 s per template
   on a brain, 2 cores (`benchmarks/bench_registration.py`).
Every stage stops when `time_limit_s` (for the whole template) has passed, keeping what it has.
The template's mask is then resampled through the composed transform onto the target grid
with linear interpolation, so the result is a probability (a soft prior), not a binary mask.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from vessa.errors import InputError
from vessa.io import Volume
from vessa.priors.anatomy_scale import anatomy_scale
from vessa.priors.drawn_slices import bounding_box
from vessa.priors.mind_demons import PATCH_SIGMA, mind_demons

SAMPLING_SEED = 1  # the metric's random samples, fixed so that a result can be reproduced (0 = wall clock)
SAMPLING_FRACTION = 0.2
MAX_METRIC_SAMPLES = 64_000
MIN_COARSE_VOXELS = 32
MAX_COARSE_VOXELS = 1_000_000  # a brain at 3 mm: 0.26 M; a 200-slice CT at 3 mm: 2.4 M, so 4 mm
MAX_MIND_VOXELS = 2_500_000  # MIND demons' grid: Colin27's head at 1.5 mm is 2.1 M voxels
MIN_REGISTERED_SIDE = 4  # ITK's Gaussian smoothing needs 4 voxels along each axis
SHRINK_FACTORS = (2, 1)
REACH_STRIDE = 4  # target voxels between the points of `warp_mask`'s coarse pass


@dataclass(frozen=True)
class RegistrationConfig:
    """resolution_mm: isotropic spacing both images are resampled to for registering;
    affine_iterations: per level; deformable: run a deformable stage (same-modality templates
    only): grey-level demons where the template correlates with the target at >=
    demons_min_correlation after histogram matching, MIND demons (mind_iterations a level, 0:
    none) where it does not, on grids of deformable_resolution_mm and mind_resolution_mm (the
    same bounds as resolution_mm's, MIND's up to `MAX_MIND_VOXELS`; demons_sigma, mind_sigma and
    MIND's patch, mind_patch_sigma, in their voxels); bias_sigma_mm: scale of the bias
    flattening of images other than CT (0: none); winsorize_percent: the affine step's images
    are clipped to their [p, 100 - p] percentiles (0: not clipped); time_limit_s: cap for the
    whole registration of one template."""

    resolution_mm: float = 3.0
    deformable_resolution_mm: float = 2.0
    affine_iterations: int = 100
    deformable: bool = True
    demons_iterations: int = 60
    demons_sigma: float = 1.0
    demons_min_correlation: float = 0.5
    mind_iterations: int = 30
    mind_resolution_mm: float = 1.5
    mind_sigma: float = 0.75
    mind_patch_sigma: float = PATCH_SIGMA
    bias_sigma_mm: float = 20.0
    winsorize_percent: float = 0.5
    time_limit_s: float = 60.0

    def __post_init__(self) -> None:
        if min(self.resolution_mm, self.deformable_resolution_mm, self.mind_resolution_mm, self.time_limit_s) <= 0:
            raise ValueError(f"resolution_mm={self.resolution_mm}, deformable_resolution_mm="
                             f"{self.deformable_resolution_mm}, mind_resolution_mm={self.mind_resolution_mm}, "
                             f"time_limit_s={self.time_limit_s}: must be > 0")
        if self.bias_sigma_mm < 0:
            raise ValueError(f"bias_sigma_mm={self.bias_sigma_mm} must be >= 0")
        if not 0 <= self.winsorize_percent < 50:
            raise ValueError(f"winsorize_percent={self.winsorize_percent} must be in [0, 50)")
        if self.affine_iterations < 1 or self.demons_iterations < 0 or self.mind_iterations < 0:
            raise ValueError("affine_iterations must be >= 1, demons_iterations and mind_iterations >= 0")
        if min(self.demons_sigma, self.mind_sigma, self.mind_patch_sigma) <= 0:
            raise ValueError(f"demons_sigma={self.demons_sigma}, mind_sigma={self.mind_sigma}, mind_patch_sigma="
                             f"{self.mind_patch_sigma}: must be > 0")


@dataclass
class Registration:
    """The transform mapping target points to template points (what resampling the template
    onto the target needs), the seconds it took, whether a stage hit the time limit, the
    correlation that decided on the deformable step (None where it was not considered), why the
    affine step failed, if it did (ITK's message; the images were then only centred), and which
    deformable step ran ("demons", "MIND demons" or None)."""

    transform: sitk.Transform
    seconds: float
    stopped_early: bool
    correlation: float | None = None
    failed: str | None = None
    deformable: str | None = None


def register(template: Volume, target: Volume, config: RegistrationConfig = RegistrationConfig(),
             same_modality: bool = True, flatten: bool = True) -> Registration:
    """Register `template` onto `target` (module docstring); `flatten`: also try the affine step
    on bias-flattened images (not for CT, whose grey levels are calibrated)."""
    for volume, what in ((template, "template"), (target, "target")):
        if min(volume.shape) < MIN_REGISTERED_SIDE:
            raise InputError(f"the {what} image ({' x '.join(map(str, volume.shape))} voxels) is too thin to register: "
                             f"templates from other volumes need >= {MIN_REGISTERED_SIDE} voxels along each axis "
                             "(draw a few slices of the structure in this image instead)")
    start = time.perf_counter()
    deadline = start + config.time_limit_s
    scale = anatomy_scale(target)
    fixed = coarse_image(target, config.resolution_mm)
    moving = coarse_image(template, config.resolution_mm)
    clipped = tuple(winsorized(image, config.winsorize_percent) for image in (fixed, moving))
    candidates = [_affine(*clipped, config, deadline, scale)]
    flattened = None
    if flatten and config.bias_sigma_mm > 0 and time.perf_counter() < deadline:
        flattened = tuple(winsorized(flatten_bias(image, config.bias_sigma_mm * scale), config.winsorize_percent)
                          for image in (fixed, moving))
        candidates.append(_affine(*flattened, config, deadline, scale))
    scored = []
    for affine, _, _ in candidates:
        aligned = sitk.Resample(moving, fixed, affine, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        matched = _histogram_matched(aligned, fixed)
        scored.append((foreground_correlation(fixed, matched), affine, aligned, matched))
    correlation, affine, aligned, matched = max(scored, key=lambda item: item[0])
    if correlation < config.demons_min_correlation and flattened is not None:
        # grey levels unlike the target's: the candidate that aligns both views of the images best
        correlation, affine, aligned, matched = min(scored, key=lambda item: sum(
            mutual_information(*pair, item[1]) for pair in (clipped, flattened)))
    errors = [error for _, _, error in candidates if error]
    failed = errors[0] if len(errors) == len(candidates) else None
    registration = Registration(affine, 0.0, any(early for _, early, _ in candidates), correlation, failed)
    grey = correlation >= config.demons_min_correlation
    if (config.deformable and same_modality and not failed and time.perf_counter() < deadline
            and (config.demons_iterations if grey else config.mind_iterations)):
        spacing_mm, max_voxels = ((config.deformable_resolution_mm, MAX_COARSE_VOXELS) if grey
                                  else (config.mind_resolution_mm, MAX_MIND_VOXELS))
        if coarse_spacing(target, spacing_mm, max_voxels) != fixed.GetSpacing():
            fixed = coarse_image(target, spacing_mm, max_voxels)
            aligned = sitk.Resample(coarse_image(template, spacing_mm, max_voxels), fixed, affine,
                                    sitk.sitkLinear, 0.0, sitk.sitkFloat32)
            if grey:
                matched = _histogram_matched(aligned, fixed)
        if grey:
            field, stopped = _demons(fixed, matched, config, deadline)
            registration.deformable = "demons"
        else:
            field, stopped = mind_demons(fixed, aligned, config.mind_iterations, config.mind_sigma, deadline,
                                         config.mind_patch_sigma)
            registration.deformable = "MIND demons"
        composite = sitk.CompositeTransform(3)
        composite.AddTransform(affine)
        composite.AddTransform(field)
        registration.transform, registration.stopped_early = composite, registration.stopped_early or stopped
    registration.seconds = time.perf_counter() - start
    return registration


def mutual_information(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform) -> float:
    """ITK's Mattes mutual information (32 bins, every voxel; lower is better, inf where the
    images do not overlap) of `moving` through `transform` against `fixed`."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetInitialTransform(transform)
    try:
        return float(method.MetricEvaluate(fixed, moving))
    except RuntimeError:  # the images do not overlap under this transform
        return float("inf")


def winsorized(image: sitk.Image, percent: float) -> sitk.Image:
    """`image` clipped to its [`percent`, 100 - `percent`] percentiles (itself where `percent` is
    0), so that a few extreme voxels (a bias field's bright corner, metal, a vessel) cannot take
    up most of the mutual information's histogram bins."""
    if percent == 0:
        return image
    array = sitk.GetArrayViewFromImage(image)
    low, high = np.percentile(array, [percent, 100 - percent])
    return sitk.Clamp(image, sitk.sitkFloat32, float(low), float(high))


def flatten_bias(image: sitk.Image, sigma_mm: float) -> sitk.Image:
    """Homomorphic flattening: each voxel divided by the local mean (a Gaussian of `sigma_mm`),
    so that a smooth multiplicative bias field cancels out and local contrast remains."""
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    mean = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), sigma_mm))
    floor = 1e-3 * max(float(np.abs(mean).max()), 1e-6)
    out = sitk.GetImageFromArray((array / np.maximum(mean, floor)).astype(np.float32))
    out.CopyInformation(image)
    return out


def foreground_correlation(a: sitk.Image, b: sitk.Image) -> float:
    """Pearson correlation of two images on one grid over the voxels where either is above its
    30th percentile (0 where one is constant there)."""
    x, y = sitk.GetArrayFromImage(a).ravel(), sitk.GetArrayFromImage(b).ravel()
    keep = (x > np.percentile(x, 30)) | (y > np.percentile(y, 30))
    x, y = x[keep].astype(np.float64), y[keep].astype(np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def warp_mask(mask: np.ndarray, template: Volume, target: Volume, transform: sitk.Transform) -> np.ndarray:
    """The template's mask (binary or soft, on the template's grid) resampled onto the target
    grid (linear: float32 in [0, 1]).

    Only the box of the target that the mask can reach is resampled (on a 200 x 512 x 512 CT
    the full grid took 3.6 s): every `REACH_STRIDE`-th target voxel is first mapped onto the
    mask dilated by `REACH_STRIDE` x the length of a voxel's diagonal plus a template voxel, so a
    target voxel whose value is not 0 has a hit within half a coarse cell wherever the transform
    stretches distances by at most 2; the rest of the grid is 0, as the full resampling gives."""
    mask = template.with_array(np.asarray(mask, np.float32)).array  # GeometryError off the template's grid
    out = np.zeros(target.shape, np.float32)
    if not mask.any():
        return out
    reach_mm = REACH_STRIDE * float(np.linalg.norm(target.spacing)) + float(max(template.spacing))
    moving, reaching = _mask_crops(mask, template, reach_mm)
    coarse_size = [(n - 1 + REACH_STRIDE - 1) // REACH_STRIDE + 1 for n in target.shape[::-1]]  # past the last voxel
    hits = sitk.GetArrayFromImage(sitk.Resample(
        reaching, coarse_size, transform, sitk.sitkNearestNeighbor, target.origin.tolist(),
        (target.spacing * REACH_STRIDE).tolist(), target.direction.ravel().tolist(), 0, sitk.sitkUInt8))
    if not hits.any():
        return out
    box = bounding_box(hits > 0)
    start = [max(0, (axis.start - 1) * REACH_STRIDE) for axis in box]
    stop = [min(n, axis.stop * REACH_STRIDE + 1) for axis, n in zip(box, target.shape, strict=True)]
    warped = sitk.Resample(moving, [b - a for a, b in zip(start, stop, strict=True)][::-1], transform,
                           sitk.sitkLinear, _position(target, start).tolist(), target.spacing.tolist(),
                           target.direction.ravel().tolist(), 0.0, sitk.sitkFloat32)
    out[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))] = np.clip(sitk.GetArrayFromImage(warped), 0, 1)
    return out


def _mask_crops(mask: np.ndarray, template: Volume, reach_mm: float) -> tuple[sitk.Image, sitk.Image]:
    """The mask (float32) and where it is not 0 dilated by a box of `reach_mm` (uint8), as images
    of the template's box around the mask grown by the reach (so that both are 0 beyond it)."""
    reach = np.ceil(reach_mm / np.asarray(template.spacing, float)[::-1]).astype(int)  # voxels, array axis order
    box = bounding_box(mask != 0)
    start = [max(0, axis.start - r - 2) for axis, r in zip(box, reach, strict=True)]  # 2 more: interpolation's 0s
    stop = [min(n, axis.stop + r + 2) for axis, r, n in zip(box, reach, mask.shape, strict=True)]
    crop = mask[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))]
    reaching = ndimage.maximum_filter(crop != 0, size=tuple(2 * reach + 1), mode="constant")
    origin = _position(template, start)
    return (Volume(crop, template.spacing, origin, template.direction).to_sitk(),
            Volume(reaching.astype(np.uint8), template.spacing, origin, template.direction).to_sitk())


def _position(volume: Volume, index: list[int]) -> np.ndarray:
    """The LPS position (mm) of the voxel at array index `index` (k, j, i) of `volume`."""
    return (volume.ijk_to_lps() @ np.array([*index[::-1], 1.0]))[:3]


def _histogram_matched(image: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """`image`'s grey levels mapped onto `reference`'s by histogram matching."""
    return sitk.HistogramMatching(image, reference, numberOfHistogramLevels=64, numberOfMatchPoints=16,
                                  thresholdAtMeanIntensity=True)


def coarse_spacing(volume: Volume, spacing_mm: float, max_voxels: int = MAX_COARSE_VOXELS) -> tuple[float, ...]:
    """The (x, y, z) spacing of `coarse_image(volume, spacing_mm, max_voxels)`: `spacing_mm` x
    `anatomy_scale(volume)`, within the bounds `coarse_image` gives."""
    size, own = volume.array.shape[::-1], [float(s) for s in volume.spacing]
    extent = [n * s for n, s in zip(size, own, strict=True)]
    spacing_mm = max(min(spacing_mm * anatomy_scale(volume), min(extent) / MIN_COARSE_VOXELS),
                     float(np.prod(extent)) ** (1 / 3) / max_voxels ** (1 / 3))
    return tuple(max(spacing_mm, s) for s in own)


def coarse_image(volume: Volume, spacing_mm: float, max_voxels: int = MAX_COARSE_VOXELS) -> sitk.Image:
    """The volume as float32, smoothed and resampled to an isotropic grid of `spacing_mm` x
    `anatomy_scale(volume)` (`spacing_mm` for a volume of a human head's size or larger), finer
    where the shortest side would keep fewer than `MIN_COARSE_VOXELS` voxels, coarser where the
    grid would exceed `max_voxels` (never finer than the volume's own spacing).

    The smoothing is a Gaussian of (new - own spacing) / 2 along each axis. Where the new spacing
    is at least twice the volume's own, blocks of f = floor(new / (2 x own)) voxels are first
    averaged (`sitk.BinShrink`) and the Gaussian made up for what the block already smoothed
    (a block's variance: own^2 (f^2 - 1) / 12): the same smoothing, up to the block's shape, on
    a grid still twice as fine as the new one. On a 200 x 512 x 512 CT to 4 mm (f = 2 in-plane)
    this takes 0.5 instead of 1.5 s; a brain at 1 mm to 3 mm (f = 1) is smoothed as before."""
    image = sitk.Cast(volume.to_sitk(), sitk.sitkFloat32)
    origin = image.GetOrigin()  # the first voxel's centre (block averaging moves the image's)
    spacing = coarse_spacing(volume, spacing_mm, max_voxels)
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing, strict=True)]
    variance = [max(0.0, (t - s) / 2) ** 2 for s, t in zip(image.GetSpacing(), spacing, strict=True)]
    blocks = [max(1, int(t // (2 * s))) for s, t in zip(image.GetSpacing(), spacing, strict=True)]
    if max(blocks) > 1:
        variance = [max(0.0, v - s * s * (f * f - 1) / 12)
                    for v, s, f in zip(variance, image.GetSpacing(), blocks, strict=True)]
        image = sitk.BinShrink(image, blocks)
    if any(variance):
        image = sitk.SmoothingRecursiveGaussian(image, [max(float(np.sqrt(v)), 1e-3) for v in variance])
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, origin, spacing,
                         image.GetDirection(), 0.0, sitk.sitkFloat32)


def _affine(fixed: sitk.Image, moving: sitk.Image, config: RegistrationConfig, deadline: float,
            scale: float = 1.0) -> tuple[sitk.AffineTransform, bool, str | None]:
    """The affine step: (transform, stopped at the deadline, ITK's error if it gave up); its
    step lengths (1 mm at first, down to 1 um) times `scale` (`anatomy_scale`)."""
    initial = _centred(fixed, moving)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    voxels = np.prod(fixed.GetSize(), dtype=np.float64)
    method.SetMetricSamplingPercentagePerLevel(
        [min(SAMPLING_FRACTION, MAX_METRIC_SAMPLES * shrink**3 / voxels) for shrink in SHRINK_FACTORS], SAMPLING_SEED)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=scale, minStep=1e-3 * scale,
                                                    numberOfIterations=config.affine_iterations,
                                                    gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(SHRINK_FACTORS))
    method.SetSmoothingSigmasPerLevel([scale, 0.0])  # mm: 1 mm at a human head's size
    method.SetInitialTransform(initial, inPlace=True)
    start = sitk.AffineTransform(initial)
    stopped = _stop_at(method, deadline, method.StopRegistration)
    try:
        method.Execute(fixed, moving)
    except RuntimeError as error:
        return start, stopped[0], itk_message(error)
    return sitk.AffineTransform(initial), stopped[0], None


def _centred(fixed: sitk.Image, moving: sitk.Image) -> sitk.AffineTransform:
    """An affine start aligning the grey levels' centres of mass, or the grids' centres where an
    image has no mass (all zero)."""
    try:
        return sitk.AffineTransform(sitk.CenteredTransformInitializer(
            fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS))
    except RuntimeError:
        return sitk.AffineTransform(sitk.CenteredTransformInitializer(
            fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.GEOMETRY))


def itk_message(error: RuntimeError) -> str:
    """ITK's own words from a SimpleITK exception, without file, line and object address."""
    text = " ".join(str(error).split())
    found = re.search(r"ITK ERROR: \w+\(0x[0-9a-f]+\): (.*)", text)
    return found.group(1) if found else text


def _demons(fixed: sitk.Image, aligned: sitk.Image, config: RegistrationConfig,
            deadline: float) -> tuple[sitk.DisplacementFieldTransform, bool]:
    """Demons from `aligned` (the template after the affine step, histogram-matched) to `fixed`."""
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(config.demons_iterations)
    demons.SetStandardDeviations(config.demons_sigma)
    stopped = _stop_at(demons, deadline, demons.Abort)
    try:
        field = demons.Execute(fixed, aligned)
    except RuntimeError:  # aborted at the deadline: no field
        field = sitk.Image(fixed.GetSize(), sitk.sitkVectorFloat64, 3)
        field.CopyInformation(fixed)
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    return transform, stopped[0]


def _stop_at(process, deadline: float, stop) -> list[bool]:
    """Call `stop()` at the first iteration after `deadline`; the returned list's item says whether it did."""
    stopped = [False]

    def check() -> None:
        if not stopped[0] and time.perf_counter() > deadline:
            stopped[0] = True
            stop()

    process.AddCommand(sitk.sitkIterationEvent, check)
    return stopped
