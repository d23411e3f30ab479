"""`Volume`: a voxel array with its exact physical geometry (origin, spacing, direction)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from vessa.errors import GeometryError, InputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _vector3(value, what: str) -> np.ndarray:
    vector = np.asarray(value, dtype=np.float64).reshape(-1)
    if vector.shape != (3,) or not np.all(np.isfinite(vector)):
        raise InputError(f"{what} must be 3 finite numbers, got {value!r}")
    return vector


def _rounded(values: np.ndarray) -> list:
    """Values to 6 decimals (1e-4 mm, the grid tolerance, shows), -0.0 as 0.0."""
    return (np.round(values, 6) + 0.0).tolist()


@dataclass
class Volume:
    """A 3D image: `array` indexed (k, j, i) and the geometry that places it in LPS space.

    spacing: voxel size along i, j, k in mm. origin: LPS position (mm) of voxel (0, 0, 0).
    direction: 3x3 matrix whose column c is the LPS unit vector of axis c (i, j, k).
    The array order is that of SimpleITK's `GetArrayFromImage` and Slicer's `arrayFromVolume`.
    """

    array: np.ndarray
    spacing: np.ndarray = field(default_factory=lambda: np.ones(3))
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim == 2:
            self.array = self.array[np.newaxis]
        if self.array.ndim != 3:
            raise InputError(f"a volume must be 2D or 3D, got an array of shape {self.array.shape}")
        if 0 in self.array.shape:
            raise InputError(f"a volume must not be empty, got shape {self.array.shape}")
        self.spacing = _vector3(self.spacing, "spacing")
        if np.any(self.spacing <= 0):
            raise InputError(f"spacing must be positive, got {self.spacing.tolist()}")
        self.origin = _vector3(self.origin, "origin")
        self.direction = np.asarray(self.direction, dtype=np.float64)
        if self.direction.shape != (3, 3) or abs(np.linalg.det(self.direction)) < 1e-6:
            raise InputError(f"direction must be an invertible 3x3 matrix, got {self.direction.tolist()}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (k, j, i)."""
        return tuple(self.array.shape)  # type: ignore[return-value]

    def ijk_to_lps(self) -> np.ndarray:
        """4x4 matrix mapping voxel index (i, j, k, 1) to LPS millimetres."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.direction * self.spacing[np.newaxis, :]
        matrix[:3, 3] = self.origin
        return matrix

    def ijk_to_ras(self) -> np.ndarray:
        """4x4 matrix mapping voxel index (i, j, k, 1) to RAS millimetres (Slicer's convention)."""
        matrix = self.ijk_to_lps()
        matrix[:3] = LPS_TO_RAS @ matrix[:3]
        return matrix

    @classmethod
    def from_ijk_to_lps(cls, array: np.ndarray, matrix: np.ndarray) -> Volume:
        """A volume from an array and its 4x4 IJK-to-LPS matrix."""
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.shape != (4, 4):
            raise InputError(f"IJK-to-LPS must be a 4x4 matrix, got shape {matrix.shape}")
        axes = matrix[:3, :3]
        spacing = np.linalg.norm(axes, axis=0)
        if np.any(spacing == 0):
            raise InputError(f"IJK-to-LPS matrix has a zero axis: {matrix.tolist()}")
        return cls(array, spacing=spacing, origin=matrix[:3, 3], direction=axes / spacing)

    @classmethod
    def from_ijk_to_ras(cls, array: np.ndarray, matrix: np.ndarray) -> Volume:
        """A volume from an array and its 4x4 IJK-to-RAS matrix (Slicer's node geometry)."""
        matrix = np.array(matrix, dtype=np.float64)
        if matrix.shape != (4, 4):
            raise InputError(f"IJK-to-RAS must be a 4x4 matrix, got shape {matrix.shape}")
        matrix[:3] = LPS_TO_RAS @ matrix[:3]
        return cls.from_ijk_to_lps(array, matrix)

    def with_array(self, array: np.ndarray) -> Volume:
        """A volume on the same grid holding `array` (which must have the same shape)."""
        array = np.asarray(array)
        if array.ndim == 2:
            array = array[np.newaxis]
        if array.shape != self.shape:
            raise GeometryError(f"array shape {array.shape} does not match the grid {self.shape}")
        return Volume(array, self.spacing.copy(), self.origin.copy(), self.direction.copy())

    def same_grid(self, other: Volume, atol: float = 1e-4) -> bool:
        """True if `other` has the same shape and IJK-to-LPS matrix (within `atol` mm)."""
        return self.shape == other.shape and np.allclose(self.ijk_to_lps(), other.ijk_to_lps(), atol=atol)

    def require_same_grid(self, other: Volume, what: str, atol: float = 1e-4, this: str = "the image") -> None:
        """Raise GeometryError naming `what` unless `other` lies on this volume's grid (`this`
        names this volume in the message); the message gives the fields that differ."""
        if self.shape != other.shape:
            raise GeometryError(f"{what}: grid shape {other.shape} differs from {this}'s {self.shape}")
        if not self.same_grid(other, atol):
            raise GeometryError(f"{what}: geometry differs from {this}'s ({self.grid_difference(other, atol)})")

    def grid_difference(self, other: Volume, atol: float = 1e-4) -> str:
        """The geometry fields (origin, spacing, direction) in which `other` differs from this
        volume, each as "other vs this", rounded so that the difference shows."""
        # a direction change d moves the matrix's columns by d x spacing (mm)
        fields = (("origin", other.origin, self.origin, atol), ("spacing", other.spacing, self.spacing, atol),
                  ("direction", other.direction, self.direction, atol / max(self.spacing.max(), 1.0)))
        differing = [(name, a, b) for name, a, b, tolerance in fields if not np.allclose(a, b, rtol=0, atol=tolerance)]
        if not differing:  # each field within tolerance, their product (the IJK-to-LPS matrix) not
            gap = float(np.abs(self.ijk_to_lps() - other.ijk_to_lps()).max())
            return f"IJK-to-LPS matrices differ by up to {gap:.6g} mm"
        return "; ".join(f"{name} {_rounded(a)} vs {_rounded(b)}" for name, a, b in differing)

    def require_finite(self, what: str) -> None:
        """Raise InputError naming `what` if the array holds NaN or infinite values."""
        if np.issubdtype(self.array.dtype, np.floating) and not np.all(np.isfinite(self.array)):
            count = int(np.size(self.array) - np.count_nonzero(np.isfinite(self.array)))
            raise InputError(f"{what} contains {count} NaN/infinite voxels")

    def to_sitk(self) -> sitk.Image:
        """This volume as a SimpleITK image (copy)."""
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        image.SetSpacing(self.spacing.tolist())
        image.SetOrigin(self.origin.tolist())
        image.SetDirection(self.direction.reshape(-1).tolist())
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Volume:
        """A volume from a scalar 2D/3D SimpleITK image (copy)."""
        dimension = image.GetDimension()
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(
                f"image has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                "only scalar images are supported"
            )
        if dimension == 2:
            spacing = [*image.GetSpacing(), 1.0]
            origin = [*image.GetOrigin(), 0.0]
            direction = np.eye(3)
            direction[:2, :2] = np.asarray(image.GetDirection()).reshape(2, 2)
        elif dimension == 3:
            spacing, origin = image.GetSpacing(), image.GetOrigin()
            direction = np.asarray(image.GetDirection()).reshape(3, 3)
        else:
            raise InputError(f"image is {dimension}D; only 2D and 3D images are supported")
        return cls(sitk.GetArrayFromImage(image), spacing, origin, direction)
