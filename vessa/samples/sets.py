"""The sample sets, and `fetch`: download (once), verify, convert into the cache.

Layout: `<cache>/downloads/<archive>` (kept, SHA-256 checked on use) and
`<cache>/samples/<set>/` with `<case>.nrrd`, `<case>.seg.nrrd` and `samples.json`. `<cache>` is
`vessa.download.cache_dir()` (`$VESSA_CACHE_DIR` or the per-user cache) unless given.
A set converted from the same archive (SHA-256 in its manifest), with all its files there,
is returned without touching the network.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from vessa.download import cache_dir
from vessa.errors import DownloadError, InputError
from vessa.samples import colin27, convert
from vessa.samples.manifest import SampleCase, is_complete, read_manifest, write_manifest
from vessa.samples.sources import Source, apt_source, extract_archive, obtain_archive, pip_source

log = logging.getLogger(__name__)

Converter = Callable[[Path, Path], Iterator[SampleCase]]


@dataclass(frozen=True)
class SampleSet:
    """A set of real cases: where its archive comes from and how it is converted."""

    name: str
    description: str
    source: Source
    convert: Converter
    not_extracted: dict[str, str] = field(default_factory=dict)


SAMPLE_SETS: dict[str, SampleSet] = {
    s.name: s
    for s in (
        SampleSet(
            "pyradiomics",
            "5 real MR/CT cases with lesion masks (pyradiomics 3.0.1 test data)",
            pip_source(
                "pyradiomics 3.0.1 source archive from PyPI (pip)",
                "pyradiomics-3.0.1.tar.gz",
                "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5",
                "--no-binary", "pyradiomics", "--no-build-isolation", "pyradiomics==3.0.1",
            ),
            convert.convert_pyradiomics,
        ),
        SampleSet(
            "colin27",
            "Colin27 T1 MRI: brain mask, AAL, Harvard-Oxford, JHU, Brodmann atlases (+ held-out AICHA)",
            apt_source(
                "Debian package mricron-data 1.2.20211006+dfsg-4 (apt-get download)",
                "mricron-data_1.2.20211006+dfsg-4_all.deb",
                "d40aa0ed66cf89bf6cafa049ad3884703c9d975c2ee2737525b7196528df9d6f",
                "mricron-data",
            ),
            colin27.convert_colin27,
            colin27.NOT_EXTRACTED,
        ),
        SampleSet(
            "stardist",
            "nuclei: a real 2D fluorescence image and a synthetic 3D volume, instance masks (stardist 0.9.2)",
            pip_source(
                "stardist 0.9.2 wheel from PyPI (pip)",
                "stardist-0.9.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
                "2316c0feb7bd5621e7a277cb3868df475c338943c591925c420ee3622c42f023",
                # The same wheel on every machine, whatever Python runs pip.
                "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
                "--abi", "cp311", "--platform", "manylinux_2_28_x86_64", "stardist==0.9.2",
            ),
            convert.convert_stardist,
            {"stardist/data/images/histo.jpg": "not extracted: RGB H&E image without a mask"},
        ),
    )
}


def get_set(name: str) -> SampleSet:
    """The sample set called `name`; InputError lists the known ones."""
    if name not in SAMPLE_SETS:
        raise InputError(f"unknown sample set {name!r}; known: {', '.join(SAMPLE_SETS)}")
    return SAMPLE_SETS[name]


def samples_root(cache: str | os.PathLike | None = None) -> Path:
    """`<cache>/samples`, where converted sets live."""
    return Path(cache or cache_dir()) / "samples"


def sample_path(name: str, cache: str | os.PathLike | None = None) -> Path:
    """The folder of sample set `name` in the cache (whether fetched or not)."""
    return samples_root(cache) / get_set(name).name


def is_fetched(name: str, cache: str | os.PathLike | None = None) -> bool:
    """Whether set `name` is converted in the cache, manifest and files complete."""
    return is_complete(sample_path(name, cache))


def load_manifest(name: str, cache: str | os.PathLike | None = None) -> list[SampleCase]:
    """The cases of fetched set `name`; InputError says how to fetch it if it is not there."""
    if not is_fetched(name, cache):
        raise InputError(f"sample set {name!r} is not fetched; run: vessa samples fetch {name}")
    return read_manifest(sample_path(name, cache))[1]


def fetch(name: str = "all", cache: str | os.PathLike | None = None, source: Source | None = None) -> Path:
    """Download, verify and convert set `name` (or "all") into the cache; return its folder.

    `source` replaces the set's own source (tests). A set already converted from the source's
    archive (same SHA-256) is returned at once; a verified archive in `<cache>/downloads` is
    converted without downloading; anything else in the set's folder is replaced.
    """
    if name == "all":
        if source is not None:
            raise InputError("a source can only be given for one sample set, not 'all'")
        for set_name in SAMPLE_SETS:
            fetch(set_name, cache)
        return samples_root(cache)
    sample_set = get_set(name)
    source = source or sample_set.source
    folder = sample_path(name, cache)
    if is_complete(folder, source.sha256):
        log.info("%s: already in %s", name, folder)
        return folder
    try:
        archive = obtain_archive(source, Path(cache or cache_dir()) / "downloads")
    except DownloadError as error:
        raise type(error)(f"{error}; retry: vessa samples fetch {name}") from None
    _convert(sample_set, source, archive, folder)
    return folder


def _convert(sample_set: SampleSet, source: Source, archive: Path, folder: Path) -> None:
    """Unpack `archive` and convert it into a staging folder renamed onto `folder` when complete."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{sample_set.name}-"))
    try:
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".unpack-") as tree:
            log.info("%s: unpacking %s", sample_set.name, archive.name)
            extract_archive(archive, Path(tree))
            cases = list(tqdm(sample_set.convert(Path(tree), staging), desc=f"converting {sample_set.name}",
                              unit="case"))
        provenance = {
            "set": sample_set.name,
            "description": sample_set.description,
            "source": source.name,
            "archive": source.filename,
            "sha256": source.sha256,
            "not_extracted": sample_set.not_extracted,
        }
        write_manifest(staging, provenance, cases)
        if folder.exists():  # an incomplete conversion, or one from another archive
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("%s: %d cases in %s", sample_set.name, len(cases), folder)
