"""`JobSpec`: everything a training job needs, as a JSON file validated when it is loaded."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vessa.errors import JobError
from vessa.io.atomic import atomic_path
from vessa.io.json_file import read_json

STAGES = ("stage1", "stage2")
METHODS = ("vessa", "unimatch", "dusss", "supervised")
DEVICES = ("auto", "cpu", "cuda")
SCHEDULES = ("poly", "cosine", "constant")
PATH_FIELDS = ("manifest", "output_dir", "init_checkpoint")
SPEC_VERSION = 1
STAGE1_EXPORT = "vessa_stage1.pt"  # the assistant a stage-1 job exports into its output_dir


def _require(condition: bool, name: str, expected: str, value: Any) -> None:
    if not condition:
        raise JobError(f"job spec field {name!r} must be {expected}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


@dataclass(frozen=True)
class JobSpec:
    """A training job: what to train (stage, method, cohort, structures) and how (steps, lr, ...).

    Paths are strings; `from_json` resolves relative ones against the spec file's folder.
    `options` holds method-specific switches, validated by the method's objective.
    """

    stage: str
    method: str
    manifest: str
    output_dir: str
    structures: list[str]
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.01
    schedule: str = "poly"
    warmup_steps: int = 0
    grad_clip: float = 1.0
    amp: bool = True
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    image_size: int = 256
    time_budget_s: float | None = None
    init_checkpoint: str | None = None
    recipe: str = "default"
    options: dict[str, Any] = field(default_factory=dict)
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        _require(self.version == SPEC_VERSION, "version", str(SPEC_VERSION), self.version)
        _require(self.stage in STAGES, "stage", f"one of {', '.join(STAGES)}", self.stage)
        _require(self.method in METHODS, "method", f"one of {', '.join(METHODS)}", self.method)
        _require(self.device in DEVICES, "device", f"one of {', '.join(DEVICES)}", self.device)
        _require(self.schedule in SCHEDULES, "schedule", f"one of {', '.join(SCHEDULES)}", self.schedule)
        for name in ("manifest", "output_dir", "recipe"):
            value = getattr(self, name)
            _require(isinstance(value, str) and value.strip() != "", name, "a non-empty string", value)
        _require(self.init_checkpoint is None or (isinstance(self.init_checkpoint, str)
                                                  and self.init_checkpoint.strip() != ""),
                 "init_checkpoint", "null or a non-empty path", self.init_checkpoint)
        structures = self.structures
        _require(isinstance(structures, list) and structures != []
                 and all(isinstance(s, str) and s.strip() for s in structures)
                 and len(set(structures)) == len(structures),
                 "structures", "a non-empty list of distinct names", structures)
        for name, low in (("steps", 1), ("batch_size", 1), ("checkpoint_every", 1),
                          ("keep_checkpoints", 1), ("log_every", 1), ("warmup_steps", 0),
                          ("seed", 0), ("image_size", 8)):
            value = getattr(self, name)
            _require(_is_int(value) and value >= low, name, f"an integer >= {low}", value)
        _require(self.warmup_steps < self.steps, "warmup_steps", f"smaller than steps ({self.steps})",
                 self.warmup_steps)
        _require(_is_number(self.lr) and self.lr > 0, "lr", "a positive number", self.lr)
        for name in ("weight_decay", "grad_clip"):
            value = getattr(self, name)
            _require(_is_number(value) and value >= 0, name, "a number >= 0 (0 = off)", value)
        _require(isinstance(self.amp, bool), "amp", "true or false", self.amp)
        _require(self.time_budget_s is None or (_is_number(self.time_budget_s) and self.time_budget_s > 0),
                 "time_budget_s", "null or a positive number of seconds", self.time_budget_s)
        _require(isinstance(self.options, dict) and all(isinstance(k, str) for k in self.options),
                 "options", "an object with string keys", self.options)

    @classmethod
    def field_names(cls) -> list[str]:
        """The names of all spec fields, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any], base_dir: str | os.PathLike | None = None) -> JobSpec:
        """A validated spec from a JSON object; relative paths are resolved against `base_dir`."""
        if not isinstance(data, dict):
            raise JobError(f"a job spec must be a JSON object, got {type(data).__name__}")
        known = cls.field_names()
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise JobError(f"unknown job spec field(s) {', '.join(unknown)}; known fields: {', '.join(known)}")
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise JobError(f"job spec is missing required field(s) {', '.join(missing)}")
        values = dict(data)
        if base_dir is not None:
            for name in PATH_FIELDS:
                if isinstance(values.get(name), str) and values[name].strip():
                    values[name] = str(Path(base_dir, values[name]).resolve())
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> JobSpec:
        """Load and validate a spec file; any problem raises JobError naming the file and field."""
        path = Path(path)
        data = read_json(path, "job spec", JobError)
        try:
            return cls.from_dict(data, base_dir=path.parent)
        except JobError as error:
            raise JobError(f"{path}: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-compatible dict (all fields, defaults included)."""
        return dataclasses.asdict(self)

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write the spec atomically as indented JSON; returns the path."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    def replace(self, **changes: Any) -> JobSpec:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
