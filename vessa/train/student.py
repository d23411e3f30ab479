"""The stage-2 student: MONAI's 2D residual `UNet` with its encoder features exposed.

`StudentUNet` is `monai.networks.nets.UNet` (same modules, same state_dict, so the same network
as the supervised method's) plus forward hooks on its encoder blocks (each strided down block
and the bottom block), so objectives can scale encoder features per sample and channel
(UniMatch complementary dropout, docs/methods.md §3.2 [D]) and read them (DuSSS uses the bottleneck).
Why this network: docs/stage2.md "Choice of the student".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from monai.networks.nets import UNet
from torch import nn

from vessa.errors import CheckpointError


@dataclass
class StudentConfig:
    """Architecture of a student, stored in its checkpoint.

    channels / strides / res_units / norm / dropout: MONAI `UNet` arguments (channels per
    level, strides between levels); class_names[c] names output channel c (0 = background);
    image_size: side of the square slices it is trained and run on.
    """

    class_names: list[str] = field(default_factory=lambda: ["background", "foreground"])
    in_channels: int = 1
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    res_units: int = 2
    norm: str = "instance"
    dropout: float = 0.0
    image_size: int = 256

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.strides = tuple(int(s) for s in self.strides)
        self.class_names = list(self.class_names)
        if len(self.channels) < 2 or min(self.channels) < 1:
            raise CheckpointError(f"student channels {self.channels}: expected >= 2 positive widths")
        if len(self.strides) != len(self.channels) - 1 or min(self.strides) < 1:
            raise CheckpointError(f"student strides {self.strides}: expected {len(self.channels) - 1} positive "
                                  "integers (one between each pair of levels)")
        if len(self.class_names) < 2:
            raise CheckpointError(f"student class_names {self.class_names}: need background + >= 1 structure")
        factor = 1
        for stride in self.strides:
            factor *= stride
        if self.image_size % factor:
            raise CheckpointError(f"student image_size {self.image_size}: must be a multiple of {factor} "
                                  f"(the product of the strides)")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["channels"], data["strides"] = list(self.channels), list(self.strides)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudentConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise CheckpointError(f"student config: unknown keys {sorted(unknown)}")
        return cls(**data)


def encoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The encoder blocks of a MONAI UNet's nested `model`: each level's down block, then the bottom."""
    blocks, node = [], model
    while isinstance(node, nn.Sequential):  # Sequential(down, SkipConnection(submodule), up)
        blocks.append(node[0])
        node = node[1].submodule
    return [*blocks, node]


class StudentUNet(UNet):
    """2D MONAI UNet: `[N, in_channels, S, S]` -> logits `[N, num_classes, S, S]`."""

    def __init__(self, config: StudentConfig):
        super().__init__(spatial_dims=2, in_channels=config.in_channels, out_channels=config.num_classes,
                         channels=config.channels, strides=config.strides, num_res_units=config.res_units,
                         norm=config.norm, dropout=config.dropout)
        self.config = config
        self._mask: torch.Tensor | None = None
        self._features: list[torch.Tensor] | None = None
        for block in encoder_blocks(self.model):
            block.register_forward_hook(self._encoder_output)

    @property
    def encoder_channels(self) -> tuple[int, ...]:
        """Channels of the encoder feature maps (one per level; the last is the bottleneck)."""
        return self.config.channels

    def _encoder_output(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if self._mask is not None:
            output = output * self._mask[:, : output.shape[1], None, None].to(output.dtype)
        if self._features is not None:
            self._features.append(output)
        return output

    def forward(self, x: torch.Tensor, channel_mask: torch.Tensor | None = None,
                return_features: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits; `channel_mask` [N, max(encoder_channels)] multiplies every encoder feature map
        per sample and channel (its first C_l entries on a level of C_l channels: one mask for
        all levels, as UniMatch V2 applies one dropout mask to all its feature levels).
        With `return_features`, (logits, encoder feature maps after the mask, finest first)."""
        self._mask, self._features = channel_mask, [] if return_features else None
        try:
            logits = super().forward(x)
            features = self._features
        finally:
            self._mask, self._features = None, None
        return (logits, features) if return_features else logits
