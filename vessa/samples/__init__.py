"""Real sample data (pyradiomics, Colin27 + atlases, stardist nuclei) fetched into the cache.

`fetch("pyradiomics")` downloads the archive once through pip/apt, checks its SHA-256 and
converts it to NRRD images and named `.seg.nrrd` segmentations with a `samples.json`
manifest; later calls work offline. `vessa samples list|fetch|path` on the command line (`vessa.cli.samples`).
"""

from vessa.samples.manifest import SampleCase
from vessa.samples.sets import (
    SAMPLE_SETS,
    SampleSet,
    fetch,
    get_set,
    is_fetched,
    load_manifest,
    sample_path,
    samples_root,
)
from vessa.samples.sources import CommandSource, Source

__all__ = [
    "SAMPLE_SETS",
    "CommandSource",
    "SampleCase",
    "SampleSet",
    "Source",
    "fetch",
    "get_set",
    "is_fetched",
    "load_manifest",
    "sample_path",
    "samples_root",
]
