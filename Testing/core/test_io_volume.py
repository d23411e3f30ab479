"""Volume geometry and file round trips (NRRD, NIfTI, MHA), and bad-input errors."""

import gzip

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vessa.errors import GeometryError, InputError
from vessa.io import Volume, read_volume, write_volume

OBLIQUE = Rotation.from_rotvec([0.3, -0.2, 0.5]).as_matrix()


def oblique_volume(dtype=np.int16) -> Volume:
    data = np.random.default_rng(0).integers(-1000, 1000, (7, 11, 13)).astype(dtype)
    return Volume(data, spacing=(0.7, 0.9, 2.5), origin=(10.123456789, -20.5, 33.3), direction=OBLIQUE)


# NIfTI stores geometry as float32 (qform/sform), so it is exact to float32 precision only.
@pytest.mark.parametrize(
    ("suffix", "atol"), [(".nrrd", 1e-12), (".mha", 1e-12), (".nii.gz", 2e-5), (".nii", 2e-5)]
)
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
def test_round_trip_keeps_data_and_oblique_anisotropic_geometry(tmp_path, suffix, atol, dtype):
    volume = oblique_volume(dtype)
    read = read_volume(write_volume(volume, tmp_path / f"v{suffix}"))
    assert read.array.dtype == volume.array.dtype
    np.testing.assert_array_equal(read.array, volume.array)
    np.testing.assert_allclose(read.ijk_to_lps(), volume.ijk_to_lps(), atol=atol)
    np.testing.assert_allclose(read.spacing, volume.spacing, atol=atol)


def test_ijk_to_ras_flips_l_and_p_and_round_trips():
    volume = oblique_volume()
    ras = volume.ijk_to_ras()
    index = np.array([2.0, 3.0, 4.0, 1.0])
    lps_point = volume.ijk_to_lps() @ index
    np.testing.assert_allclose(ras @ index, lps_point * [-1, -1, 1, 1])
    back = Volume.from_ijk_to_ras(volume.array, ras)
    np.testing.assert_allclose(back.ijk_to_lps(), volume.ijk_to_lps(), atol=1e-12)
    np.testing.assert_allclose(back.spacing, volume.spacing)


def test_voxel_index_maps_through_direction_and_spacing():
    volume = Volume(np.zeros((2, 3, 4)), spacing=(2, 3, 4), origin=(1, 1, 1), direction=np.diag([1, -1, 1]))
    np.testing.assert_allclose(volume.ijk_to_lps() @ [1, 1, 1, 1], [3, -2, 5, 1])


def test_2d_array_becomes_single_slice():
    assert Volume(np.zeros((5, 6))).shape == (1, 5, 6)


def test_2d_file_reads_as_one_slice(tmp_path):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.arange(20, dtype=np.uint8).reshape(4, 5))
    image.SetSpacing((0.5, 0.25))
    sitk.WriteImage(image, str(tmp_path / "img.tif"))
    volume = read_volume(tmp_path / "img.tif")
    assert volume.shape == (1, 4, 5)
    np.testing.assert_allclose(volume.spacing, [0.5, 0.25, 1.0])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match="image not found: .*nothere.nrrd"):
        read_volume(tmp_path / "nothere.nrrd")


def test_unreadable_file_is_named(tmp_path):
    path = tmp_path / "broken.nrrd"
    path.write_bytes(b"NRRD0004\nthis is not a header\n")
    with pytest.raises(InputError, match="broken.nrrd: unreadable image"):
        read_volume(path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"x")
    with pytest.raises(InputError, match="unsupported image format"):
        read_volume(path)


def test_4d_image_rejected(tmp_path):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.Image([3, 3, 3, 2], sitk.sitkUInt8), str(tmp_path / "four.nrrd"))
    with pytest.raises(InputError, match="four.nrrd: image is 4D"):
        read_volume(tmp_path / "four.nrrd")


def test_vector_image_rejected(tmp_path):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.Image([3, 3, 3], sitk.sitkVectorUInt8, 3), str(tmp_path / "rgb.nrrd"))
    with pytest.raises(InputError, match="rgb.nrrd: image has 3 components"):
        read_volume(tmp_path / "rgb.nrrd")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_voxels_rejected(tmp_path, bad):
    data = np.zeros((3, 3, 3), np.float32)
    data[1, 1, 1] = bad
    path = write_volume(Volume(data), tmp_path / "nan.nrrd")
    with pytest.raises(InputError, match="nan.nrrd contains 1 NaN/infinite voxels"):
        read_volume(path)
    assert np.isnan(read_volume(path, allow_nonfinite=True).array).sum() == int(np.isnan(bad))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"array": np.zeros((2, 2, 2, 2))}, "must be 2D or 3D"),
        ({"array": np.zeros((0, 2, 2))}, "must not be empty"),
        ({"array": np.zeros((2, 2, 2)), "spacing": (1, 0, 1)}, "spacing must be positive"),
        ({"array": np.zeros((2, 2, 2)), "spacing": (1, 1)}, "spacing must be 3 finite numbers"),
        ({"array": np.zeros((2, 2, 2)), "origin": (0, np.nan, 0)}, "origin must be 3 finite numbers"),
        ({"array": np.zeros((2, 2, 2)), "direction": np.zeros((3, 3))}, "invertible 3x3"),
    ],
)
def test_ill_volume(kwargs, message):
    with pytest.raises(InputError, match=message):
        Volume(**kwargs)


def test_grid_mismatch_named():
    volume = oblique_volume()
    shifted = Volume(volume.array, volume.spacing, volume.origin + [0, 0, 1], volume.direction)
    assert volume.same_grid(volume.with_array(volume.array * 2))
    with pytest.raises(GeometryError, match="label: geometry differs"):
        volume.require_same_grid(shifted, "label")
    with pytest.raises(GeometryError, match="label: grid shape"):
        volume.require_same_grid(Volume(np.zeros((1, 2, 3))), "label")
    with pytest.raises(GeometryError, match="does not match the grid"):
        volume.with_array(np.zeros((1, 2, 3)))


@pytest.mark.parametrize(("change", "message"), [
    ({"origin": [0.0, 0.0, 1.0]}, r"\(origin \[1\.0, 2\.0, 4\.0\] vs \[1\.0, 2\.0, 3\.0\]\)"),
    ({"spacing": [0.5, 0.5, 2.5]}, r"\(spacing \[0\.5, 0\.5, 2\.5\] vs \[0\.5, 0\.5, 2\.0\]\)"),
    ({"direction": np.diag([1.0, -1.0, -1.0])}, r"\(direction \[\[1\.0, 0\.0, 0\.0\], \[0\.0, -1\.0, 0\.0\]"),
])
def test_grid_mismatch_names_only_the_field_that_differs(change, message):
    volume = Volume(np.zeros((2, 3, 4)), spacing=(0.5, 0.5, 2.0), origin=(1.0, 2.0, 3.0))
    fields = {"spacing": volume.spacing, "origin": volume.origin, "direction": volume.direction}
    fields["origin"] = fields["origin"] + change.get("origin", 0.0)
    fields["spacing"] = change.get("spacing", fields["spacing"])
    fields["direction"] = change.get("direction", fields["direction"])
    with pytest.raises(GeometryError, match=message) as error:
        volume.require_same_grid(Volume(volume.array, **fields), "label", this="the reference")
    assert "differs from the reference's" in str(error.value)
    assert str(error.value).count(" vs ") == 1  # one field, not two identical origins


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    import SimpleITK as sitk

    target = tmp_path / "out.nrrd"
    write_volume(Volume(np.ones((2, 2, 2), np.uint8)), target)
    before = target.read_bytes()

    def fail(image, path, compress):
        with open(path, "wb") as handle:
            handle.write(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        write_volume(Volume(np.zeros((2, 2, 2), np.uint8)), target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nrrd"]


def test_gzip_corrupt_nifti_named(tmp_path):
    path = tmp_path / "bad.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti header at all"))
    with pytest.raises(InputError, match="bad.nii.gz: unreadable image"):
        read_volume(path)


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    path = write_volume(Volume(np.zeros((2, 2, 2), np.uint8)), tmp_path / "perm.nrrd")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
