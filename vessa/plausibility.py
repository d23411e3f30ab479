"""Warnings for runs whose result cannot mean much, shared by the command line and the Slicer effect.

Each function returns the one-line warnings that apply (an empty list when none does):
- `image_warnings`: a constant image (nothing to find: the model can only repeat the templates'
  location prior) and a slice step larger than the structure (the sparse pass can skip it);
- `modality_warning`: a template of another modality than the image;
- `result_warnings`: an empty result.
"""

from __future__ import annotations

import numpy as np

from vessa.io import Template, Volume


def image_modality(array: np.ndarray, declared: str = "") -> str:
    """`declared` ("CT", "MR", ...) in capitals, else "CT" when the values follow the model's CT
    rule (air below -500 HU), else "" (unknown, not CT)."""
    from vessa.model.intensity import is_ct

    if declared.strip():
        return declared.strip().upper()
    return "CT" if is_ct(array) else ""


def modality_mismatch(target: str, template: str) -> bool:
    """True when two modalities (from `image_modality`) certainly differ: both known and
    different, or exactly one of them CT."""
    if target and template:
        return target != template
    return (target == "CT") != (template == "CT")


def modality_warning(template: Template, target_name: str, target_modality: str) -> str | None:
    """The warning for a template whose modality differs from the target's, else None."""
    if not modality_mismatch(target_modality, template.modality):
        return None
    return (f"template {template.case_id}/{template.name} is {template.modality or 'not CT'} but {target_name} is "
            f"{target_modality or 'not CT'}; using it anyway")


def image_warnings(image: Volume, templates: list[Template], slice_step: int = 1) -> list[str]:
    """Warnings about the image before the run: constant, or a slice step above the structure's extent."""
    warnings = []
    low, high = np.min(image.array), np.max(image.array)
    if low == high:
        warnings.append(f"the image is constant (every voxel is {low}): there is nothing to find, the result "
                        "only repeats where the templates have the structure")
    if slice_step > 1 and templates:
        from vessa.model.slicing import slicing_axis

        axis = slicing_axis(image.shape, image.spacing)
        along, slice_mm = image.direction[:, 2 - axis], float(image.spacing[2 - axis])
        extent_mm = min(_extent_along(template, along) for template in templates)
        slices = int(extent_mm / slice_mm) + 1
        if slice_step > slices:
            warnings.append(f"a slice step of {slice_step} exceeds the structure's extent: its smallest template "
                            f"spans {extent_mm:.1f} mm, {slices} slice(s) of {slice_mm:g} mm here, so the sparse "
                            "pass can miss it; use a smaller step")
    return warnings


def result_warnings(mask: np.ndarray, structure: str, threshold: float) -> list[str]:
    """Warnings about a thresholded result: empty."""
    if np.any(mask):
        return []
    return [f"the result is empty: no voxel of {structure!r} reaches probability {threshold:g} "
            "(the model did not find it)"]


def _extent_along(template: Template, direction: np.ndarray) -> float:
    """Extent (mm, voxel centre to centre) of the template's mask bounding box along an LPS unit vector."""
    k, j, i = (np.flatnonzero(template.mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3))
    corners = np.array([[ci, cj, ck, 1.0] for ci in (i[0], i[-1]) for cj in (j[0], j[-1]) for ck in (k[0], k[-1])])
    positions = (template.image.ijk_to_lps() @ corners.T)[:3].T @ direction
    return float(positions.max() - positions.min())
