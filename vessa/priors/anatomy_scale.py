"""How large the anatomy in a volume is, against the human head the settings in mm are for.

Every setting in mm of the priors (the registration's grids and step lengths, the bias
flattening's scale, the shape prior's swell, the fusion's prior scale, the appearance
features' blurs) was chosen on human volumes. A small animal's head, a tenth of a human's,
would get grids too coarse to hold its anatomy and blurs wider than its structures, so:
- the registration multiplies its settings by `anatomy_scale`, the volume's size against a
  human head's: a small volume, an animal's or a block cut from a human scan, is registered on
  as many voxels as a head (Colin27 at a tenth of its size, development seed 4,
  `benchmarks/bench_registration.py --scale 0.1`: Dice 0.702 / 0.009 on the strong /
  new-contrast deformation before, 0.845 / 0.826 after; 0.853 / 0.845 at its own size);
- completion and template transfer measure distances and blurs on `human_size_spacing`, the
  spacing over `structure_scale`: smaller only where the voxels are finer too (an animal's
  scan), since a block of a human scan at 1 mm still shows structures of a human's size
  (Harvard-Oxford and Brodmann regions at a tenth of their size, 3 / 5 drawn slices: 0.726 /
  0.741 before, 0.806 / 0.869 after, as at their own size; `benchmarks/bench_completion.py --scale`).
"""

from __future__ import annotations

import numpy as np

from vessa.io import Volume
from vessa.model.slicing import array_spacing

REFERENCE_EXTENT_MM = 200.0  # the size the mm settings are for: a human head's longest side (Colin27's: 217 mm)
REFERENCE_SPACING_MM = 1.0  # the voxels they were chosen on (Colin27's)


def anatomy_scale(volume: Volume) -> float:
    """How much smaller than a human head the volume is: its longest side over
    `REFERENCE_EXTENT_MM`, at most 1 (1 for a human head, a chest or larger)."""
    extent = np.asarray(volume.array.shape[::-1], float) * np.asarray(volume.spacing, float)
    return float(min(1.0, extent.max() / REFERENCE_EXTENT_MM))


def structure_scale(volume: Volume) -> float:
    """How much smaller than a human's its structures are: `anatomy_scale` where the voxels are
    as fine (the finest spacing over `REFERENCE_SPACING_MM`, when larger, takes its place; at most 1)."""
    finest = float(np.min(np.asarray(volume.spacing, float)))
    return float(min(1.0, max(anatomy_scale(volume), finest / REFERENCE_SPACING_MM)))


def human_size_spacing(volume: Volume) -> np.ndarray:
    """Spacing per array axis (k, j, i), in mm of the anatomy grown to a human's size: the
    volume's own spacing over `structure_scale` (its own spacing for a human scan)."""
    return array_spacing(volume.spacing) / structure_scale(volume)
