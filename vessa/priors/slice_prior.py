"""Shape prior of a structure drawn on a few slices: where it is on every other slice.

For drawn slices z_1 < ... < z_m along the slicing axis (`drawn_slices`), each drawn mask is
turned into an in-plane signed distance (mm, positive inside) and carried to the slices
around it; the prior of slice z is then
- between two drawn slices a < z < b: the two carried distances blended linearly,
  (1 - t) d_a + t d_b with t = (z - a) / (b - a) (shape-based interpolation), plus
  `swell_mm` x 4 t (1 - t): a linear blend of distances shrinks a shape that moves or turns
  between the two slices (held-out structures, 3 drawn slices: 0.112 of the volume missed
  between them against 0.042 added), and this bump, 0 on the drawn slices, offsets it. The
  blend of a large mask and a small one narrows like a cone (the chord between their radii),
  where structures narrow like an ellipsoid's end: the blend is raised until it covers at least
  `profile_area` (equivalent radius on the chord, bulged by `bulge` towards an ellipse widest
  at the larger mask and through the smaller one), most where one is a structure's tip;
- beyond the outermost drawn slice z_e (and towards a slice drawn empty), over the larger of
  `extrapolation` x the gap between z_e and its neighbouring drawn slice (a correction drawn
  near one end changes that end only) and `single_extent` x z_e's equivalent radius (the
  structure's own size), closing before any slice drawn empty: the carried distance of z_e
  minus r (1 - c(x) / c(x_e)), r the drawn mask's inscribed radius and c(x) = (1 - x^q)^(1/q)
  a superellipse (`closing`) of x, 0 at its widest and 1 at the extent's end. With a drawn
  slice z_b behind z_e (`follow_taper`), the end continues the taper the drawn slices show: the
  closing passes through z_b, z_e (at x_e) and the extent's end, with z_e's equivalent radius
  over z_b's (`closing_shape`): an end that narrows between the last two drawn slices is widest
  at z_b, with q in `TAPER_EXPONENTS` (q = 1 a cone's straight taper, q = 2 an ellipsoid's
  end); one that narrows less, or widens, is an ellipse widest between them. With a single
  drawn slice (or `follow_taper` off), x_e = 0: the end closes from z_e like an ellipsoid's end
  (q = 2), or, with a single drawn slice, a flatter superellipsoid's (q = `single_end_exponent`);
- elsewhere: absent (`ABSENT`).
"Carried" follows the anatomy: with `follow_anatomy` a distance map moves from slice to
slice along the demons fields between neighbouring image slices (`slice_flow`), inside a box
around the drawn masks; without it, it is copied unchanged. Not every structure moves with the
image (a parcel drawn on another brain and resampled does not): with `follow_anatomy` the prior
is built both ways and blended, the carried one weighted by `flow_weight`, plus the difference
between how well each reproduces the drawn slices (each drawn mask carried, or copied, onto the
neighbouring drawn slices: mean Dice) over `flow_gate`, clipped to [0, 1]. The defaults were
chosen on structures of the training atlases (AAL, JHU, the brain mask, stardist nuclei;
`benchmarks/bench_completion.py`).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from scipy import ndimage, optimize

from vessa.priors.drawn_slices import DrawnSlices, mask_dice
from vessa.priors.slice_flow import FieldCache, neighbour_fields, warp

ABSENT = -1e4  # signed distance (mm) on slices the prior does not reach
TAPER_EXPONENTS = (1.0, 2.0)  # the closing's exponent where it follows a taper ([1, 3], [1, 4] scored lower)


@dataclass(frozen=True)
class SlicePriorConfig:
    """extrapolation: how far beyond the outermost drawn slices the structure is continued,
    in gaps between that slice and its neighbouring drawn slice; single_extent: the same with one drawn slice, in
    equivalent radii (mm) of its mask; follow_anatomy: carry masks along slice-to-slice
    deformations; margin: the box the deformations are computed in extends the drawn masks'
    bounding box by this fraction of its size on each side (at least 8 pixels; with a field cache,
    the box of an earlier call is kept while the drawn masks lie 2 pixels inside it); swell_mm:
    what the interpolated distance gains midway between two drawn slices (module docstring;
    fitted on the training structures: 0, 0.25, 0.5, 1 and 2 mm scored 0.825, 0.828, 0.830,
    0.829, 0.810 at 3 drawn slices); single_end_exponent: the end's shape with one drawn slice
    (fitted the same way: 1.5 / 2 / 3 scored 0.564 / 0.591 / 0.605 with one drawn slice, and q = 3
    for every count cost 0.015 at 3 slices, so it applies to a single slice only); follow_taper:
    the end beyond several drawn slices continues their taper (module docstring; on the training
    structures, the prior alone, 2 / 3 / 5 drawn slices: 0.799 / 0.834 / 0.869 -> 0.803 / 0.848 /
    0.884, the nuclei gaining most, the atlas regions 0.779 / 0.831 / 0.872 -> 0.776 / 0.830 /
    0.877; benchmarks/RESULTS.md (a)); flow_weight, flow_gate: the weight of the masks carried
    along the anatomy against the masks copied, and how it moves with their agreement with the
    drawn slices (module docstring; flow_gate 0: the weight is fixed; fitted on the training
    structures, `bench_completion.py --fit-flow`: every blend with flow_weight >= 0.5 within 0.001
    of the flow alone there, the gate for structures that do not move with the image, such as
    AICHA's parcels: 0.773 -> 0.796 at 3 drawn slices, held out); bulge: how far the least area
    between two drawn slices bulges from the chord between their radii towards an ellipse
    (`profile_area`; fitted on the training structures, `bench_completion.py --fit-bulge
    --correction`: see benchmarks/RESULTS.md (a))."""

    extrapolation: float = 1.0
    single_extent: float = 0.5
    follow_anatomy: bool = True
    margin: float = 0.25
    swell_mm: float = 0.5
    single_end_exponent: float = 3.0
    follow_taper: bool = True
    flow_weight: float = 0.75
    flow_gate: float = 0.4
    bulge: float = 0.5

    def __post_init__(self) -> None:
        if self.single_end_exponent < 1:
            raise ValueError(f"single_end_exponent={self.single_end_exponent}: must be >= 1")
        if not 0 <= self.flow_weight <= 1:
            raise ValueError(f"flow_weight={self.flow_weight}: must be in [0, 1]")
        for name in ("extrapolation", "single_extent", "margin", "swell_mm", "flow_gate", "bulge"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 0")


def signed_distance(mask: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """In-plane signed distance (mm) of a 2D mask: > 0 inside, < 0 outside (ABSENT if empty)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return np.full(mask.shape, ABSENT, np.float32)
    if mask.all():
        return np.full(mask.shape, float(max(mask.shape) * max(spacing)), np.float32)
    inside = ndimage.distance_transform_edt(mask, sampling=spacing)
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing)
    return (inside - outside).astype(np.float32)


def slice_prior(
    unit_slices: np.ndarray,
    drawn: DrawnSlices,
    spacing: tuple[float, float, float],
    config: SlicePriorConfig = SlicePriorConfig(),
    cache: FieldCache | None = None,
    key: Hashable = None,
) -> np.ndarray:
    """Signed distance prior [n, rows, cols] (mm) for every slice of the stack.

    unit_slices: the image cut along the drawn axis, [n, rows, cols] in [0, 1]; spacing:
    (along the axis, rows, columns) in mm. Drawn slices get their own mask's distance. With a
    `cache` (and the stack's `key`), the slice-to-slice deformations are kept across calls.
    """
    count, rows, cols = unit_slices.shape
    plane_spacing = (float(spacing[1]), float(spacing[2]))
    prior = np.full((count, rows, cols), ABSENT, np.float32)
    box = _box(drawn.masks, config.margin)
    if cache is not None:  # keep the box of earlier calls while the drawn masks lie well inside it
        box = cache.box_for(key, box, _box(drawn.masks, 0.0, least=2))
    own = {int(z): signed_distance(m, plane_spacing)[box] for z, m in zip(drawn.indices, drawn.masks, strict=True)}
    ends = _ends(drawn, spacing, config)
    low = max(0, min(end.slice - int(np.ceil(end.reach)) for end in ends if end.sign < 0) - 1)
    high = min(count - 1, max(end.slice + int(np.ceil(end.reach)) for end in ends if end.sign > 0) + 1)
    weight = 0.0
    if config.follow_anatomy:
        fields = _neighbour_fields(unit_slices[low : high + 1][(slice(None), *box)], low, cache,
                                   (key, *((b.start, b.stop) for b in box)))
        region, agreement = _region(_Carrier(low, fields), count, own, drawn, ends, plane_spacing, config)
        pairs = _interpolated_pairs(drawn)  # copied, a mask's agreement with its neighbour is their own Dice
        copied_agreement = float(np.mean([mask_dice(own[a] > 0, own[b] > 0) for a, b in pairs])) if pairs else None
        weight = flow_weight(agreement, copied_agreement, config)
    if weight < 1:
        copied, _ = _region(_Carrier(low), count, own, drawn, ends, plane_spacing, config)
        region = copied if weight == 0 else np.where(copied <= ABSENT, ABSENT,  # the same reach either way
                                                     weight * region + (1 - weight) * copied)
    prior[(slice(None), *box)] = region
    return prior


def flow_weight(carried: float | None, copied: float | None, config: SlicePriorConfig) -> float:
    """The weight of the masks carried along the anatomy against the masks copied (module
    docstring): `config.flow_weight`, moved by the difference of their agreements with the drawn
    slices over `config.flow_gate`, in [0, 1] (None: nothing to compare, the base weight)."""
    if carried is None or copied is None or config.flow_gate == 0:
        return config.flow_weight
    return float(np.clip(config.flow_weight + (carried - copied) / config.flow_gate, 0.0, 1.0))


def _region(carrier: _Carrier, count: int, own: dict[int, np.ndarray], drawn: DrawnSlices, ends: list[_End],
            plane_spacing: tuple[float, float], config: SlicePriorConfig) -> tuple[np.ndarray, float | None]:
    """The prior in the box of the drawn masks `own` [count, rows, cols], the masks moved from
    slice to slice by `carrier`, and its agreement with the drawn slices: the mean Dice of each
    drawn mask carried onto its interpolated neighbours' slices against their masks (None: no
    two drawn slices are interpolated)."""
    region = np.full((count, *own[int(drawn.indices[0])].shape), ABSENT, np.float32)
    for z, distance in own.items():
        region[z] = distance
    agreements = []
    for a, b in _interpolated_pairs(drawn):
        forward, backward = carrier.carry(own[a], a, b), carrier.carry(own[b], b, a)
        agreements += [mask_dice(forward[b] > 0, own[b] > 0), mask_dice(backward[a] > 0, own[a] > 0)]
        areas = (int((own[a] > 0).sum()), int((own[b] > 0).sum()))
        for z in range(a + 1, b):
            t = (z - a) / (b - a)
            blend = (1 - t) * forward[z] + t * backward[z] + config.swell_mm * 4 * t * (1 - t)
            region[z] = _raised_to_cover(blend, profile_area(*areas, t, config.bulge))
    exponent = config.single_end_exponent if drawn.count == 1 else 2.0
    for end in ends:
        stop = int(np.clip(end.slice + end.sign * int(np.ceil(end.reach)), 0, count - 1))
        if stop == end.slice or end.reach <= 0:
            continue
        radius = max(float(own[end.slice].max()), min(plane_spacing))
        start, q = 0.0, exponent  # the end slice as the closing's widest point
        if config.follow_taper and end.gap:
            start, q = closing_shape(end.taper, end.gap / (end.gap + end.reach + 1))
        at_end = closing(start, q)  # the end slice's radius, relative to the closing's widest
        for z, distance in carrier.carry(own[end.slice], end.slice, stop).items():
            u = abs(z - end.slice) / (end.reach + 1)
            if u < 1:
                region[z] = distance - radius * (1 - closing(start + (1 - start) * u, q) / at_end)
    return region, float(np.mean(agreements)) if agreements else None


def profile_area(first: float, second: float, t: float, bulge: float) -> float:
    """The area at `t` (0: the `first` drawn mask's slice, 1: the `second`'s; areas in pixels) of
    a structure whose equivalent radius follows the chord between the two masks' radii (a cone's
    taper), moved by `bulge` towards an ellipse widest at the larger mask and through the smaller
    one (0: the chord, 1: the ellipse); the larger area where both are equal."""
    larger, smaller = max(first, second), min(first, second)
    if larger == 0:
        return 0.0
    s = t if first >= second else 1 - t  # from the larger mask's slice
    ratio = np.sqrt(smaller / larger)
    chord = 1 - s * (1 - ratio)
    ellipse = closing(s * np.sqrt(1 - ratio**2), 2.0)  # closing(sqrt(1 - ratio^2), 2) = ratio: the smaller
    return larger * (chord + bulge * (ellipse - chord)) ** 2


def _raised_to_cover(distance: np.ndarray, area: float) -> np.ndarray:
    """`distance` raised by a constant until at least `area` pixels are inside (> 0), the new
    boundary midway between the last value in (ties included) and the next lower one; unchanged
    where it covers the area already."""
    wanted = min(int(round(area)), distance.size)
    if wanted <= int((distance > 0).sum()):
        return distance
    rank = distance.size - wanted  # the wanted-th largest, in ascending order
    last_in = float(np.partition(distance, rank, axis=None)[rank])
    below = distance[distance < last_in]
    return distance - 0.5 * (last_in + (float(below.max()) if below.size else last_in - 1.0))


def closing(x: float, q: float) -> float:
    """The superellipse (1 - x^q)^(1/q): a closing end's radius at x (0: its widest, 1: its tip)
    relative to the widest; q = 2 an ellipse, q = 1 a straight taper, q > 2 flatter."""
    return max(0.0, 1.0 - x**q) ** (1.0 / q)


def closing_shape(taper: float, end: float) -> tuple[float, float]:
    """(x at the end slice, q) of the closing through the drawn slice behind (radius 1), the end
    slice (`end` of the way from the slice behind to the tip, radius `taper`) and the tip.
    Narrowing towards the end: the slice behind is the widest point (x_end = `end`) and q in
    `TAPER_EXPONENTS` makes closing(end, q) = taper. Narrowing less than an ellipse with its
    widest point there (q = 2): an ellipse whose widest point lies between the two slices (x_end
    in [0, `end`)), as far towards the end as the two radii need."""
    low, high = TAPER_EXPONENTS
    if taper <= closing(end, low):
        return end, low
    if taper <= closing(end, high):
        return end, float(optimize.brentq(lambda q: closing(end, q) - taper, low, high))

    def ratio(x: float) -> float:  # end over behind, the widest point placed so that the end is at x
        behind = closing((end - x) / (1 - end), high)
        return closing(x, high) / behind if behind > 0 else np.inf

    lowest = 0.0 if end < 0.5 else 2 * end - 1 + 1e-9  # 2 end - 1: the slice behind at the ellipse's other tip
    if taper >= ratio(lowest):
        return lowest, high
    return float(optimize.brentq(lambda x: ratio(x) - taper, lowest, end)), high


class _End(NamedTuple):
    """A drawn slice the prior extends beyond: `slice`, `sign` (-1/+1: the direction), `reach`
    (slices), `gap` (slices to the drawn slice behind it, 0: none) and `taper` (its equivalent
    radius over that slice's, 0: none)."""

    slice: int
    sign: int
    reach: float
    gap: int
    taper: float


def _ends(drawn: DrawnSlices, spacing: tuple[float, float, float], config: SlicePriorConfig) -> list[_End]:
    """Every drawn slice the prior extends beyond: the outermost ones, and those next to a slice
    drawn empty. The reach is the larger of `extrapolation` x the gap to the neighbouring drawn
    slice on the other side and `single_extent` x the slice's equivalent radius, and it closes
    before a slice drawn empty."""
    ends = []
    indices = [int(z) for z in drawn.indices]
    for position, z in enumerate(indices):
        for sign in (-1, 1):
            beyond = position + sign
            if 0 <= beyond < len(indices) and not _empty_between(drawn.empty, *sorted((z, indices[beyond]))):
                continue  # interpolated towards that neighbour
            behind = position - sign
            gap = abs(z - indices[behind]) if 0 <= behind < len(indices) else 0
            area = float(drawn.masks[position].sum()) * spacing[1] * spacing[2]
            reach = max(config.extrapolation * gap, config.single_extent * np.sqrt(area / np.pi) / spacing[0])
            walls = [abs(int(e) - z) - 1 for e in drawn.empty if (int(e) - z) * sign > 0]
            taper = float(np.sqrt(drawn.masks[position].sum() / drawn.masks[behind].sum())) if gap else 0.0
            ends.append(_End(z, sign, min([reach, *walls]), gap, taper))
    return ends


def _interpolated_pairs(drawn: DrawnSlices) -> list[tuple[int, int]]:
    """Neighbouring drawn slices a < b with slices between them and none drawn empty there."""
    pairs = zip(drawn.indices[:-1].tolist(), drawn.indices[1:].tolist(), strict=True)
    return [(a, b) for a, b in pairs if b - a >= 2 and not _empty_between(drawn.empty, a, b)]


def _empty_between(empty: np.ndarray, a: int, b: int) -> bool:
    """Whether a slice drawn empty lies strictly between slices a < b."""
    return bool(np.any((empty > a) & (empty < b)))


def _box(masks: np.ndarray, margin: float, least: int = 8) -> tuple[slice, slice]:
    """The drawn masks' bounding box grown by `margin` of its size (at least `least` px) per side."""
    union = masks.any(axis=0)
    box = []
    for axis in (0, 1):
        present = np.flatnonzero(union.any(axis=1 - axis))
        low, high = int(present[0]), int(present[-1]) + 1
        grow = max(least, int(np.ceil(margin * (high - low))))
        box.append(slice(max(0, low - grow), min(union.shape[axis], high + grow)))
    return box[0], box[1]


def _neighbour_fields(slices: np.ndarray, offset: int, cache: FieldCache | None,
                      key: Hashable) -> dict[int, torch.Tensor]:
    """The image's neighbour deformations in each direction (step +1 / -1) for `slices` (the
    volume's slices offset .. offset + len(slices) - 1), computed or taken from `cache` under `key`."""
    if len(slices) < 2:
        return {}
    stack = torch.from_numpy(np.ascontiguousarray(slices, np.float32))[:, None]
    with torch.inference_mode():
        if cache is None:
            return {step: neighbour_fields(stack, step) for step in (+1, -1)}
        return {step: cache.fields(key, stack, offset, step) for step in (+1, -1)}


class _Carrier:
    """Moves in-plane maps from slice to slice along `fields` (`_neighbour_fields` of the slices
    from `offset` on), or copies them unchanged (no fields)."""

    def __init__(self, offset: int, fields: dict[int, torch.Tensor] | None = None):
        self.offset = offset
        self.fields = fields or {}

    def carry(self, plane: np.ndarray, start: int, stop: int) -> dict[int, np.ndarray]:
        """`plane` (a map on slice `start`) on every slice from start +- 1 to `stop` inclusive."""
        step = 1 if stop > start else -1
        out: dict[int, np.ndarray] = {}
        current = torch.from_numpy(plane)[None, None]
        for z in range(start + step, stop + step, step):
            if self.fields:
                index = (z - step if step == 1 else z) - self.offset
                with torch.inference_mode():
                    current = warp(current, self.fields[step][index : index + 1])
            out[z] = current[0, 0].numpy()
        return out
