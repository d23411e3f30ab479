"""Batched slice-to-slice demons (vessa.priors.slice_flow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vessa.priors.slice_flow import FieldCache, demons, gaussian_blur, neighbour_fields, symmetric_forces, warp


def disc(center: tuple[float, float], radius: float = 8.0, size: int = 48) -> torch.Tensor:
    rows, cols = np.mgrid[0:size, 0:size]
    image = ((rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2).astype(np.float32)
    return torch.from_numpy(image)[None, None]


def test_a_zero_field_leaves_the_image_as_it_is():
    image = torch.rand(2, 1, 9, 11)
    assert torch.allclose(warp(image, torch.zeros(2, 2, 9, 11)), image, atol=1e-6)


def test_warp_moves_by_the_field_in_pixels():
    image = disc((24, 20))
    field = torch.zeros(1, 2, 48, 48)
    field[:, 0] = 4.0  # sample 4 columns to the right: the disc appears 4 columns to the left
    assert torch.allclose(warp(image, field), disc((24, 16)), atol=1e-5)


def test_gaussian_blur_keeps_a_constant_and_spreads_a_point():
    assert torch.allclose(gaussian_blur(torch.full((1, 2, 7, 7), 3.0), 1.5), torch.full((1, 2, 7, 7), 3.0))
    point = torch.zeros(1, 1, 9, 9)
    point[0, 0, 4, 4] = 1.0
    blurred = gaussian_blur(point, 1.0)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert blurred[0, 0, 4, 4] < 0.5 and blurred[0, 0, 4, 5] > 0


def soft_disc(center: tuple[float, float]) -> torch.Tensor:
    """A disc with a 1-pixel soft edge (images have gradients across edges, not steps)."""
    return gaussian_blur(disc(center), 1.0)


def test_symmetric_forces_summed_channel_by_channel_are_the_formula_on_whole_tensors():
    def gradient_of(images: torch.Tensor) -> torch.Tensor:  # [n, c, h, w] -> [n, 2, c, h, w]
        return torch.stack(torch.gradient(images, dim=(3, 2)), dim=1)

    def formula(fixed: torch.Tensor, warped: torch.Tensor) -> torch.Tensor:
        gradient = (gradient_of(warped) + gradient_of(fixed)) / 2
        difference = fixed - warped
        denominator = (gradient * gradient).sum(dim=(1, 2)) + (difference * difference).sum(dim=1) + 1e-6
        return (difference[:, None] * gradient).sum(dim=2) / denominator[:, None]

    generator = torch.Generator().manual_seed(0)
    for channels in (1, 12):
        fixed, warped = (torch.rand((3, channels, 24, 32), generator=generator) for _ in range(2))
        update = symmetric_forces(fixed, warped, gradient_of(fixed), gradient_of)
        assert update.shape == (3, 2, 24, 32)
        if channels == 1:  # the slice flow's case: the same operations, so the same bits
            assert torch.equal(update, formula(fixed, warped))
        else:
            torch.testing.assert_close(update, formula(fixed, warped), rtol=1e-5, atol=1e-6)


def test_demons_registers_a_shifted_disc_in_a_batch():
    fixed = torch.cat([soft_disc((24, 27)), soft_disc((21, 24))])
    moving = torch.cat([soft_disc((24, 24)), soft_disc((24, 24))])
    field = demons(fixed, moving)
    before = (moving - fixed).abs().sum(dim=(1, 2, 3))
    after = (warp(moving, field) - fixed).abs().sum(dim=(1, 2, 3))
    assert torch.all(after < 0.1 * before)
    assert field[0, 0, 24, 27].item() == pytest.approx(-3.0, abs=0.5)  # fixed's centre samples moving's
    assert field[1, 1, 21, 24].item() == pytest.approx(3.0, abs=0.5)


def test_neighbour_fields_carry_each_slice_to_its_neighbour():
    stack = torch.cat([soft_disc((24, 18 + 3 * z)) for z in range(4)])
    forward, backward = neighbour_fields(stack, +1), neighbour_fields(stack, -1)
    assert forward.shape == backward.shape == (3, 2, 48, 48)
    assert (warp(stack[:-1], forward) - stack[1:]).abs().sum() < 0.1 * (stack[:-1] - stack[1:]).abs().sum()
    assert (warp(stack[1:], backward) - stack[:-1]).abs().sum() < 0.1 * (stack[:-1] - stack[1:]).abs().sum()
    with pytest.raises(ValueError, match="step=2"):
        neighbour_fields(stack, 2)


def test_demons_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="fixed and moving"):
        demons(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))


def test_the_field_cache_registers_each_pair_once_and_keeps_a_box_that_still_fits():
    stack = torch.cat([soft_disc((24, 18 + 3 * z)) for z in range(5)])
    cache = FieldCache()
    first = cache.fields("volume", stack[1:4], offset=1, step=+1)
    assert cache.computed == 2 and torch.equal(first, neighbour_fields(stack[1:4], +1))
    wider = cache.fields("volume", stack, offset=0, step=+1)
    assert cache.computed == 4  # pairs (0, 1) and (3, 4) are new
    assert torch.equal(wider[1:3], first)
    outer = (slice(0, 40), slice(5, 45))
    assert cache.box_for("volume", outer, outer) == outer
    assert cache.box_for("volume", (slice(2, 48), slice(0, 48)), (slice(2, 30), slice(10, 40))) == outer
    wider = (slice(0, 48), slice(0, 48))
    assert cache.box_for("volume", wider, (slice(2, 44), slice(10, 40))) == wider
