"""The stage-2 student: MONAI's 2D `BasicUNet` with its encoder features exposed.

`StudentUNet` is `monai.networks.nets.BasicUNet` (same modules, same state_dict) whose forward
is split into `encode` (five feature maps x0..x4, full to 1/16 resolution) and `decode`, so
objectives can perturb encoder features (UniMatch complementary dropout, METHODS §3.2 [D])
and read the bottleneck (DuSSS image embedding). Why this network: docs/stage2.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from monai.networks.nets import BasicUNet

from vessa.errors import CheckpointError


@dataclass
class StudentConfig:
    """Architecture of a student, stored in its checkpoint.

    features: BasicUNet widths (5 encoder levels + the last decoder level); class_names[c]
    names output channel c (channel 0 is the background); image_size: side of the square
    slice the student is trained and run on.
    """

    class_names: list[str] = field(default_factory=lambda: ["background", "foreground"])
    in_channels: int = 1
    features: tuple[int, ...] = (16, 32, 64, 128, 256, 16)
    norm: str = "batch"
    dropout: float = 0.0
    image_size: int = 256

    def __post_init__(self) -> None:
        self.features = tuple(int(f) for f in self.features)
        self.class_names = list(self.class_names)
        if len(self.features) != 6 or min(self.features) < 1:
            raise CheckpointError(f"student features {self.features}: expected 6 positive widths")
        if len(self.class_names) < 2:
            raise CheckpointError(f"student class_names {self.class_names}: need background + >= 1 structure")
        if self.image_size % 16:
            raise CheckpointError(f"student image_size {self.image_size}: must be a multiple of 16")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["features"] = list(self.features)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudentConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise CheckpointError(f"student config: unknown keys {sorted(unknown)}")
        return cls(**data)


class StudentUNet(BasicUNet):
    """2D BasicUNet: `[N, in_channels, S, S]` -> logits `[N, num_classes, S, S]` (S % 16 == 0)."""

    def __init__(self, config: StudentConfig):
        super().__init__(
            spatial_dims=2,
            in_channels=config.in_channels,
            out_channels=config.num_classes,
            features=config.features,
            norm=config.norm,
            dropout=config.dropout,
        )
        self.config = config

    @property
    def encoder_channels(self) -> tuple[int, ...]:
        """Channels of the five encoder feature maps x0..x4."""
        return self.config.features[:5]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder feature maps [x0 (S), x1 (S/2), x2 (S/4), x3 (S/8), x4 (S/16)]."""
        x0 = self.conv_0(x)
        x1 = self.down_1(x0)
        x2 = self.down_2(x1)
        x3 = self.down_3(x2)
        return [x0, x1, x2, x3, self.down_4(x3)]

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Logits from the five encoder feature maps."""
        x0, x1, x2, x3, x4 = features
        u = self.upcat_4(x4, x3)
        u = self.upcat_3(u, x2)
        u = self.upcat_2(u, x1)
        return self.final_conv(self.upcat_1(u, x0))

    def forward(self, x: torch.Tensor, channel_mask: torch.Tensor | None = None,
                return_features: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits; `channel_mask` [N, max(encoder_channels)] multiplies every encoder feature
        map per sample and channel (its first C_l entries on a level of C_l channels: one mask
        for all levels, as UniMatch V2 applies one dropout mask to all its feature levels).
        With `return_features`, (logits, encoder features after the mask)."""
        features = self.encode(x)
        if channel_mask is not None:
            features = [f * channel_mask[:, : f.shape[1], None, None].to(f.dtype) for f in features]
        logits = self.decode(features)
        return (logits, features) if return_features else logits
