"""How large a volume's anatomy is against a human head's (vessa.priors.anatomy_scale)."""

from __future__ import annotations

import numpy as np
import pytest

from vessa.io import Volume
from vessa.priors.anatomy_scale import anatomy_scale, human_size_spacing, structure_scale


def volume(shape_kji: tuple[int, int, int], spacing_ijk: tuple[float, float, float]) -> Volume:
    return Volume(np.zeros(shape_kji, np.uint8), spacing=spacing_ijk)


@pytest.mark.parametrize(
    ("shape", "spacing", "anatomy", "structures"),
    [
        ((181, 217, 181), (1.0, 1.0, 1.0), 1.0, 1.0),  # Colin27: a human head
        ((61, 512, 512), (0.627, 0.627, 5.0), 1.0, 1.0),  # a chest CT
        ((44, 44, 44), (1.0, 1.0, 1.0), 0.22, 1.0),  # a block of a human scan: small, not fine
        ((100, 200, 150), (0.1, 0.1, 0.1), 0.1, 0.1),  # a mouse head: small and fine
        ((21, 120, 45), (0.664, 0.664, 2.1), 0.3984, 0.664),  # a breast MR crop (pyradiomics breast1)
    ],
)
def test_a_volume_is_small_by_its_extent_and_its_structures_by_its_voxels_too(shape, spacing, anatomy, structures):
    image = volume(shape, spacing)
    assert anatomy_scale(image) == pytest.approx(anatomy)
    assert structure_scale(image) == pytest.approx(structures)
    assert human_size_spacing(image) == pytest.approx(np.array(spacing[::-1]) / structures)
