"""Fixtures shared by every test area: a headless MRML scene, a private cache, the gpu marker."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

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
