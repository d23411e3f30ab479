"""SampleDataRegistration: VESSA's sample sets in Slicer's Sample Data module.

Each set of `vessa.samples` (pyradiomics' lesion cases, Colin27 with its atlases, stardist
nuclei) is one entry of the "VESSA" category. Its button runs our own download: `fetch`
obtains the set's archive once through pip or apt and checks its SHA-256 before converting
it, then every case is loaded, each image once, with its segmentation (`scene_io`). The entry
also names that archive in the downloads cache with its SHA-256, so `SampleData.downloadSample`
checks it the Sample Data way once the set has been fetched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from . import scene_io

log = logging.getLogger(__name__)

CATEGORY = "VESSA"


class SampleDataRegistration:
    """Registers the sample sets (`sets`: name -> `vessa.samples.SampleSet`, default all) with a
    SampleData logic class; `fetch(name) -> folder` and `cases(name) -> [SampleCase]` default to
    `vessa.samples.fetch` / `load_manifest`; `downloads`: the archives' folder."""

    def __init__(self, sets: dict | None = None, fetch: Callable[[str], Path] | None = None,
                 cases: Callable[[str], list] | None = None, downloads: Path | None = None):
        from vessa import samples
        from vessa.download import cache_dir

        self.sets = samples.SAMPLE_SETS if sets is None else sets
        self.fetch = fetch or samples.fetch
        self.cases = cases or samples.load_manifest
        self.downloads = Path(downloads) if downloads else Path(cache_dir()) / "downloads"

    def sampleName(self, setName: str) -> str:
        """The entry's name in the Sample Data module."""
        return f"VESSA {setName}"

    def register(self, logic=None) -> list[str]:
        """Add one entry per set to `logic` (default: `SampleData.SampleDataLogic`); the names
        registered."""
        if logic is None:
            import SampleData

            logic = SampleData.SampleDataLogic
        names = []
        for setName, sampleSet in self.sets.items():
            source = sampleSet.source
            logic.registerCustomSampleDataSource(
                category=CATEGORY,
                sampleName=self.sampleName(setName),
                uris=[(self.downloads / source.filename).as_uri()],
                fileNames=[source.filename],
                nodeNames=[None],
                loadFiles=[False],
                loadFileType=[None],
                checksums=[f"SHA256:{source.sha256}"],
                customDownloader=lambda _source, name=setName: self.download(name),
            )
            names.append(self.sampleName(setName))
        return names

    def download(self, setName: str) -> list:
        """Fetch set `setName` (SHA-256 checked) and load its cases: each image once as a volume
        node named after its file, each segmentation as "<case> segmentation". Returns the nodes."""
        from vessa.io import read_segmentation, read_volume

        self.fetch(setName)
        nodes, images = [], {}
        for case in self.cases(setName):
            image = Path(case.image)
            if image not in images:
                images[image] = scene_io.volumeToNode(read_volume(image), image.name.split(".")[0])
                nodes.append(images[image])
            segmentation = read_segmentation(case.segmentation)
            nodes.append(scene_io.segmentationToNode(segmentation, images[image], f"{case.case_id} segmentation"))
        log.info("%s: %d nodes loaded", self.sampleName(setName), len(nodes))
        return nodes
