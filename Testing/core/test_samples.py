"""vessa.samples: archives built here (no network) go through fetch, checks, conversion and the CLI."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from vessa import cli
from vessa.errors import ChecksumError, DownloadError, InputError
from vessa.io import Volume, read_segmentation, read_volume
from vessa.samples import SAMPLE_SETS, CommandSource, fetch, load_manifest, sample_path
from vessa.samples import colin27 as colin27_module
from vessa.samples import sources as sources_module
from vessa.samples.colin27 import read_label_names, read_nifti
from vessa.samples.manifest import MANIFEST_NAME, read_manifest

RNG = np.random.default_rng(7)
# An oblique direction (rotation about k), so a geometry mix-up cannot go unnoticed.
ANGLE = np.deg2rad(20)
OBLIQUE = np.array([[np.cos(ANGLE), -np.sin(ANGLE), 0], [np.sin(ANGLE), np.cos(ANGLE), 0], [0, 0, 1]])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_image(array: np.ndarray, path: Path, spacing=(1, 1, 1), origin=(0, 0, 0), direction=None) -> Path:
    image = sitk.GetImageFromArray(array)
    if array.ndim == 3:
        image.SetSpacing([float(s) for s in spacing])
        image.SetOrigin([float(o) for o in origin])
        image.SetDirection(np.eye(3).ravel().tolist() if direction is None else np.ravel(direction).tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


@dataclass
class FileSource:
    """A Source handing out a prepared archive; `offline` makes it fail like a dead network."""

    archive: Path
    sha256: str
    name: str = "test archive"
    offline: bool = False
    calls: int = 0

    @property
    def filename(self) -> str:
        return self.archive.name

    def download(self, dest_dir: Path) -> Path:
        self.calls += 1
        if self.offline:
            raise DownloadError(f"{self.name}: network unreachable")
        return Path(shutil.copy(self.archive, dest_dir / self.filename))


# --- archives with the layout of the real ones, holding tiny files ---------------------------

PYRADIOMICS_GEOMETRY = {
    case: {"spacing": (0.7 + n / 10, 0.8, 6.5), "origin": (-99.6 + n, 99.6, -78.0 + 3 * n), "direction": OBLIQUE}
    for n, case in enumerate(("brain1", "brain2", "breast1", "lung1", "lung2"))
}


def pyradiomics_archive(folder: Path, label_values=(0, 1)) -> Path:
    data = folder / "tree" / "pyradiomics-3.0.1" / "data"
    for case, geometry in PYRADIOMICS_GEOMETRY.items():
        write_image(RNG.integers(-1024, 3000, (3, 5, 4)).astype(np.int16), data / f"{case}_image.nrrd", **geometry)
        label = RNG.choice(np.array(label_values, np.int16), (3, 5, 4))
        write_image(label, data / f"{case}_label.nrrd", **geometry)
    archive = folder / "pyradiomics-3.0.1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder / "tree" / "pyradiomics-3.0.1", arcname="pyradiomics-3.0.1")
    return archive


def stardist_wheel(folder: Path) -> Path:
    images = folder / "tree"
    arrays = {
        "img2d": RNG.integers(0, 255, (6, 7)).astype(np.uint16),
        "mask2d": RNG.choice(np.array([0, 1, 2, 5], np.uint16), (6, 7)),
        "img3d": RNG.integers(100, 300, (3, 6, 5)).astype(np.uint16),
        "mask3d": RNG.choice(np.array([0, 3, 4], np.uint16), (3, 6, 5)),
    }
    archive = folder / "stardist-test.whl"
    with zipfile.ZipFile(archive, "w") as wheel:
        for name, array in arrays.items():
            wheel.write(write_image(array, images / f"{name}.tif"), f"stardist/data/images/{name}.tif")
    return archive


# ch2's grid in the real package: LPS direction diag(-1, -1, 1).
CH2 = {"spacing": (1, 1, 1), "origin": (3, 4, -2), "direction": np.diag([-1.0, -1.0, 1.0])}
CH2_SHAPE = (5, 7, 6)
# The same voxels with the i axis flipped: the MNI152 placement of the FSL atlases.
FLIPPED = {"spacing": (1, 1, 1), "origin": (3 - 5, 4, -2), "direction": np.diag([1.0, -1.0, 1.0])}


def write_nifti_with_bad_qform(array: np.ndarray, path: Path, **geometry) -> None:
    """A NIfTI whose qform has y/z offsets 0 and codes 2, as mricron-data's Harvard-Oxford file."""
    write_image(array, path, **geometry)
    header = bytearray(gzip.decompress(path.read_bytes()))
    header[252:256] = struct.pack("<2h", 2, 2)  # qform_code, sform_code: NIFTI_XFORM_ALIGNED_ANAT
    header[272:280] = struct.pack("<2f", 0.0, 0.0)  # qoffset_y, qoffset_z
    path.write_bytes(gzip.compress(bytes(header)))


def mricron_tree(root: Path) -> dict[str, np.ndarray]:
    """The templates folder of mricron-data with tiny files; returns the label arrays on ch2's grid."""
    templates = root / colin27_module.TEMPLATES
    write_image(RNG.integers(0, 255, CH2_SHAPE).astype(np.uint8), templates / "ch2.nii.gz", **CH2)
    brain = np.zeros(CH2_SHAPE, np.uint8)
    brain[1:4, 2:5, 1:5] = 60
    write_image(brain, templates / "ch2bet.nii.gz", **CH2)
    labels = {name: RNG.choice(np.array(values, np.uint8), CH2_SHAPE) for name, values in
              {"aal": [0, 1, 2, 116], "ho": [0, 3, 7], "jhu": [0, 1, 2], "ba": [0, 4, 17], "aicha": [0, 1, 2]}.items()}
    write_image(labels["aal"], templates / "aal.nii.gz", **CH2)
    (templates / "aal.nii.txt").write_bytes(b"1 Precentral_L 2001\r\n2 Precentral_R 2002\r\n116 Vermis_10 9170\r\n")
    write_nifti_with_bad_qform(np.flip(labels["ho"], axis=2), templates / "HarvardOxford-cort-maxprob-thr0-1mm.nii.gz",
                               **FLIPPED)
    write_image(np.flip(labels["jhu"], axis=2), templates / "JHU-WhiteMatter-labels-1mm.nii.gz", **FLIPPED)
    (templates / "JHU-WhiteMatter-labels-1mm.nii.txt").write_bytes(
        b"0\tUnclassified\r\n1\tGenu_of_corpus_callosum\r\n2\tFornix_(column_and_body_of_fornix)\r\n")
    write_image(labels["ba"], templates / "brodmann.nii.gz", **CH2)
    write_image(labels["aicha"], templates / "AICHAmc.nii.gz", **CH2)
    (templates / "AICHAmc.nii.txt").write_text("1 G_Frontal_Sup-1 2\n2 G_Frontal_Sup-2 3\n")
    return {**labels, "brain": brain > 0}


def mricron_deb(folder: Path) -> tuple[Path, dict[str, np.ndarray]]:
    dpkg_deb = shutil.which("dpkg-deb")
    if dpkg_deb is None:
        pytest.skip("dpkg-deb is not installed (needed to build and unpack a .deb)")
    root = folder / "pkg"
    labels = mricron_tree(root)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text(
        "Package: mricron-data\nVersion: 1.0\nArchitecture: all\nMaintainer: test <t@example.org>\n"
        "Description: test package\n")
    archive = folder / "mricron-data_test_all.deb"
    subprocess.run([dpkg_deb, "-Zgzip", "--root-owner-group", "-b", str(root), str(archive)],
                   check=True, capture_output=True)
    return archive, labels


def without_network(monkeypatch: pytest.MonkeyPatch, name: str, like=None) -> None:
    """Give set `name` a source for the same archive as `like` (default: its own source) that
    fails like a dead network if it is asked to download."""
    like = like or SAMPLE_SETS[name].source
    offline = FileSource(Path(like.filename), like.sha256, offline=True)
    monkeypatch.setitem(SAMPLE_SETS, name, replace(SAMPLE_SETS[name], source=offline))


@pytest.fixture(autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This module's own VESSA_CACHE_DIR, so no test here can write into a user's cache."""
    folder = tmp_path_factory.mktemp("samples-cache")
    monkeypatch.setenv("VESSA_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def radiomics_source(tmp_path: Path) -> FileSource:
    archive = pyradiomics_archive(tmp_path / "src")
    return FileSource(archive, sha256(archive))


def assert_same_geometry(volume: Volume, spacing, origin, direction) -> None:
    """Equal up to float round-off (NRRD stores direction x spacing, so an oblique spacing may move 1 ulp)."""
    np.testing.assert_allclose(volume.spacing, np.asarray(spacing, float), rtol=0, atol=1e-12)
    np.testing.assert_allclose(volume.origin, np.asarray(origin, float), rtol=0, atol=1e-12)
    np.testing.assert_allclose(volume.direction, direction, rtol=0, atol=1e-12)


# --- fetch, conversion, cache -----------------------------------------------------------------

def test_pyradiomics_cases_keep_data_geometry_and_are_named_lesion(radiomics_source, cache):
    folder = fetch("pyradiomics", source=radiomics_source)
    assert folder == cache / "samples" / "pyradiomics" == sample_path("pyradiomics")
    cases = load_manifest("pyradiomics")
    assert [c.case_id for c in cases] == list(PYRADIOMICS_GEOMETRY)
    assert [c.modality for c in cases] == ["MR", "MR", "MR", "CT", "CT"]
    data = radiomics_source.archive.parent / "tree" / "pyradiomics-3.0.1" / "data"
    for case in cases:
        assert case.segment_names == ("lesion",) and case.split == "train"
        image = read_volume(case.image)
        source = sitk.ReadImage(str(data / f"{case.case_id}_image.nrrd"))
        np.testing.assert_array_equal(image.array, sitk.GetArrayFromImage(source))
        assert image.array.dtype == np.int16
        assert_same_geometry(image, source.GetSpacing(), source.GetOrigin(),
                             np.reshape(source.GetDirection(), (3, 3)))
        segmentation = read_segmentation(case.segmentation)
        assert segmentation.names() == ["lesion"]
        assert_same_geometry(segmentation.geometry(), image.spacing, image.origin, image.direction)
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(data / f"{case.case_id}_label.nrrd")))
        np.testing.assert_array_equal(segmentation.get("lesion").mask, label == 1)
    provenance, _ = read_manifest(folder)
    assert provenance["sha256"] == radiomics_source.sha256
    assert provenance["archive"] == "pyradiomics-3.0.1.tar.gz"
    assert (cache / "downloads" / "pyradiomics-3.0.1.tar.gz").is_file()


def test_second_fetch_uses_the_cache_without_downloading(radiomics_source, cache):
    first = fetch("pyradiomics", source=radiomics_source)
    manifest = (first / MANIFEST_NAME).read_bytes()
    written = {path.name: path.stat().st_mtime_ns for path in first.iterdir()}
    radiomics_source.offline = True
    assert fetch("pyradiomics", source=radiomics_source) == first
    assert radiomics_source.calls == 1
    assert {path.name: path.stat().st_mtime_ns for path in first.iterdir()} == written  # nothing redone
    # Converted files gone but the archive kept: converted again from the verified archive.
    shutil.rmtree(first)
    assert fetch("pyradiomics", source=radiomics_source) == first
    assert radiomics_source.calls == 1
    assert (first / MANIFEST_NAME).read_bytes() == manifest
    # An incomplete set (a file missing) is not taken as fetched.
    (first / "lung2.seg.nrrd").unlink()
    fetch("pyradiomics", source=radiomics_source)
    assert (first / "lung2.seg.nrrd").is_file() and radiomics_source.calls == 1


def test_a_set_from_another_archive_is_converted_again(radiomics_source, tmp_path):
    fetch("pyradiomics", source=radiomics_source)
    other_archive = pyradiomics_archive(tmp_path / "other")
    other = FileSource(other_archive, sha256(other_archive))
    fetch("pyradiomics", source=other)
    assert other.calls == 1
    assert read_manifest(sample_path("pyradiomics"))[0]["sha256"] == other.sha256
    data = tmp_path / "other" / "tree" / "pyradiomics-3.0.1" / "data"
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(data / "lung1_image.nrrd")))
    np.testing.assert_array_equal(read_volume(sample_path("pyradiomics") / "lung1.nrrd").array, expected)


def test_wrong_sha256_is_refused_and_nothing_is_kept(radiomics_source, cache):
    bad = FileSource(radiomics_source.archive, "0" * 64)
    with pytest.raises(ChecksumError, match=r"SHA-256 .* expected 0{64}.*retry: vessa samples fetch pyradiomics"):
        fetch("pyradiomics", source=bad)
    assert not (cache / "downloads" / bad.filename).exists()
    assert list((cache / "downloads").iterdir()) == []
    assert not sample_path("pyradiomics").exists()


def test_corrupt_cached_archive_is_downloaded_again(radiomics_source, cache):
    cached = cache / "downloads" / radiomics_source.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    fetch("pyradiomics", source=radiomics_source)
    assert radiomics_source.calls == 1 and sha256(cached) == radiomics_source.sha256


def test_network_failure_names_source_and_retry_command(radiomics_source):
    radiomics_source.offline = True
    expected = r"^test archive: network unreachable; retry: vessa samples fetch pyradiomics$"
    with pytest.raises(DownloadError, match=expected):
        fetch("pyradiomics", source=radiomics_source)
    assert not sample_path("pyradiomics").exists()


def test_label_values_other_than_0_1_are_rejected(tmp_path):
    archive = pyradiomics_archive(tmp_path, label_values=(0, 1, 2))
    with pytest.raises(InputError, match=r"brain1_label.nrrd: expected a 0/1 mask"):
        fetch("pyradiomics", source=FileSource(archive, sha256(archive)))
    assert not sample_path("pyradiomics").exists()
    assert [p.name for p in sample_path("pyradiomics").parent.iterdir()] == []  # no staging left


def test_stardist_nucleus_segment_and_instances(tmp_path):
    archive = stardist_wheel(tmp_path)
    fetch("stardist", source=FileSource(archive, sha256(archive)))
    cases = {c.case_id: c for c in load_manifest("stardist")}
    assert list(cases) == ["nuclei2d", "nuclei3d"]
    for case_id, mask_name in (("nuclei2d", "mask2d"), ("nuclei3d", "mask3d")):
        case = cases[case_id]
        assert case.modality == "microscopy" and case.segment_names == ("nucleus",)
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "tree" / f"{mask_name}.tif")))
        mask = mask.reshape(read_volume(case.image).shape)
        instances = read_volume(case.instances)
        np.testing.assert_array_equal(instances.array, mask)
        np.testing.assert_array_equal(read_segmentation(case.segmentation).get("nucleus").mask, mask > 0)
    assert read_volume(cases["nuclei2d"].image).shape == (1, 6, 7)
    assert "synthetic" in cases["nuclei3d"].description


def test_colin27_atlases_on_ch2_grid_with_names(tmp_path):
    archive, labels = mricron_deb(tmp_path)
    fetch("colin27", source=FileSource(archive, sha256(archive)))
    cases = {c.case_id: c for c in load_manifest("colin27")}
    assert list(cases) == ["colin27_brain", "colin27_aal", "colin27_harvardoxford", "colin27_jhu",
                           "colin27_brodmann", "colin27_aicha"]
    assert {c.image for c in cases.values()} == {sample_path("colin27") / "colin27.nrrd"}
    image = read_volume(cases["colin27_aal"].image)
    assert_same_geometry(image, **CH2)
    expected = {
        "colin27_brain": {"brain": labels["brain"]},
        "colin27_aal": {"Precentral_L": labels["aal"] == 1, "Precentral_R": labels["aal"] == 2,
                        "Vermis_10": labels["aal"] == 116},
        # Flipped, with a wrong qform: only right if placed by the sform and resampled onto ch2.
        "colin27_harvardoxford": {"HarvardOxford_3": labels["ho"] == 3, "HarvardOxford_7": labels["ho"] == 7},
        "colin27_jhu": {"Genu_of_corpus_callosum": labels["jhu"] == 1,
                        "Fornix_(column_and_body_of_fornix)": labels["jhu"] == 2},
        "colin27_brodmann": {"BA_4": labels["ba"] == 4, "BA_17": labels["ba"] == 17},
        "colin27_aicha": {"G_Frontal_Sup-1": labels["aicha"] == 1, "G_Frontal_Sup-2": labels["aicha"] == 2},
    }
    for case_id, segments in expected.items():
        segmentation = read_segmentation(cases[case_id].segmentation)
        assert segmentation.names() == list(segments) == list(cases[case_id].segment_names)
        assert_same_geometry(segmentation.geometry(), **CH2)
        for name, mask in segments.items():
            np.testing.assert_array_equal(segmentation.get(name).mask, mask, err_msg=f"{case_id}/{name}")
    assert [c.split for c in cases.values()] == ["train"] * 5 + ["heldout"]
    provenance, _ = read_manifest(sample_path("colin27"))
    assert all(reason.startswith("heldout") for reason in provenance["not_extracted"].values())


def test_read_nifti_prefers_the_sform_over_a_broken_qform(tmp_path):
    path = tmp_path / "atlas.nii.gz"
    write_nifti_with_bad_qform(np.arange(60, dtype=np.uint8).reshape(3, 4, 5), path, **FLIPPED)
    assert read_volume(path).origin.tolist() == [-2.0, 0.0, 0.0]  # what ITK makes of the qform
    volume = read_nifti(path)
    assert_same_geometry(volume, **FLIPPED)
    np.testing.assert_array_equal(volume.array, np.arange(60).reshape(3, 4, 5))


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (b"1 Precentral_L 2001\r\n2 Precentral_R 2002\r\n", {1: "Precentral_L", 2: "Precentral_R"}),
        (b"0\tUnclassified\r\n1\tMiddle_cerebellar_peduncle\r\n", {1: "Middle_cerebellar_peduncle"}),
        (b"\n3 A\n# comment\n", {3: "A"}),
    ],
)
def test_read_label_names(tmp_path, text, names):
    path = tmp_path / "names.txt"
    path.write_bytes(text)
    assert read_label_names(path) == names


def test_read_label_names_rejects_a_file_without_names(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("0 Unclassified\nlabel name\n")
    with pytest.raises(InputError, match="names.txt: no '<label> <name>' lines"):
        read_label_names(path)


def test_unknown_or_missing_sets_raise_input_error():
    with pytest.raises(InputError, match="unknown sample set 'nope'; known: pyradiomics, colin27, stardist"):
        fetch("nope")
    with pytest.raises(InputError, match="not fetched; run: vessa samples fetch stardist"):
        load_manifest("stardist")
    with pytest.raises(InputError, match="only be given for one sample set"):
        fetch("all", source=FileSource(Path("x.tar.gz"), "0" * 64))


# --- package-manager sources ------------------------------------------------------------------

def test_command_source_runs_the_command_in_the_folder(tmp_path):
    writer = "import pathlib, sys; print('fetching'); pathlib.Path(sys.argv[1], 'a.bin').write_bytes(b'abc')"
    source = CommandSource("script", "a.bin", "", (sys.executable, "-c", writer, "{dest}"))
    path = source.download(tmp_path)
    assert path == tmp_path / "a.bin" and path.read_bytes() == b"abc"


def test_command_source_failure_is_one_line_with_the_command(tmp_path):
    failing = (sys.executable, "-c", "import sys; print('Could not resolve host'); sys.exit(3)")
    with pytest.raises(DownloadError) as error:
        CommandSource("PyPI (pip)", "a.bin", "", failing).download(tmp_path)
    message = str(error.value)
    assert "\n" not in message and message.startswith("PyPI (pip): `")
    assert message.endswith("exited with 3 (Could not resolve host)")
    with pytest.raises(DownloadError, match=r"expected a.bin, the command wrote nothing"):
        CommandSource("quiet", "a.bin", "", (sys.executable, "-c", "pass")).download(tmp_path)
    with pytest.raises(DownloadError, match="cannot run no-such-tool"):
        CommandSource("missing", "a.bin", "", ("no-such-tool",)).download(tmp_path)


def test_apt_source_updates_package_lists_once_when_the_package_is_unknown(tmp_path, monkeypatch):
    calls = []

    def fake_run(argv, cwd, what):
        calls.append(argv)
        if argv == ["apt-get", "download", "mricron-data"] and len(calls) == 1:
            raise DownloadError(f"{what}: E: Unable to locate package mricron-data")
        if argv[1] == "download":
            (cwd / "m.deb").write_bytes(b"deb")
        return ""

    monkeypatch.setattr(sources_module, "run_logged", fake_run)
    path = sources_module.apt_source("apt", "m.deb", "", "mricron-data").download(tmp_path)
    assert path.read_bytes() == b"deb"
    assert calls == [["apt-get", "download", "mricron-data"], ["apt-get", "update"],
                     ["apt-get", "download", "mricron-data"]]


def test_registered_sources_pin_versions_and_hashes():
    stardist = SAMPLE_SETS["stardist"].source
    assert "stardist==0.9.2" in stardist.argv and "--python-version" in stardist.argv
    assert SAMPLE_SETS["pyradiomics"].source.argv[:3] == (sys.executable, "-m", "pip")
    for sample_set in SAMPLE_SETS.values():
        assert len(sample_set.source.sha256) == 64 and sample_set.source.filename


# --- command line -----------------------------------------------------------------------------

def test_cli_list_fetch_path(radiomics_source, cache, capsys, monkeypatch):
    fetch("pyradiomics", source=radiomics_source)
    assert cli.main(["samples", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["pyradiomics", "cached,", "5", "cases"]
    assert lines[2].split()[:3] == ["stardist", "not", "fetched"]
    assert cli.main(["samples", "path", "pyradiomics"]) == 0
    assert capsys.readouterr().out.strip() == str(cache / "samples" / "pyradiomics")
    assert cli.main(["samples", "path", "stardist"]) == 2
    assert "vessa samples fetch stardist" in capsys.readouterr().err
    # Already converted: the CLI fetch returns without any source being asked.
    without_network(monkeypatch, "pyradiomics", like=radiomics_source)
    assert cli.main(["samples", "fetch", "pyradiomics"]) == 0
    assert capsys.readouterr().out.strip() == str(cache / "samples" / "pyradiomics")


# --- the real thing ---------------------------------------------------------------------------

@pytest.mark.slow
def test_real_fetch_of_all_sets_then_offline(monkeypatch):
    """Downloads ~54 MB through pip and apt-get, converts, then fetches again with no source."""
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get is not available")
    fetch("all")
    counts = {name: len(load_manifest(name)) for name in SAMPLE_SETS}
    assert counts == {"pyradiomics": 5, "colin27": 6, "stardist": 2}
    aal = next(c for c in load_manifest("colin27") if c.case_id == "colin27_aal")
    assert len(aal.segment_names) == 116 and aal.segment_names[:2] == ("Precentral_L", "Precentral_R")
    jhu = next(c for c in load_manifest("colin27") if c.case_id == "colin27_jhu")
    assert len(jhu.segment_names) == 48 and "Genu_of_corpus_callosum" in jhu.segment_names
    nuclei = read_volume(next(c for c in load_manifest("stardist") if c.case_id == "nuclei2d").instances)
    assert len(np.unique(nuclei.array)) - 1 == 125
    for name in list(SAMPLE_SETS):
        without_network(monkeypatch, name)
    fetch("all")
