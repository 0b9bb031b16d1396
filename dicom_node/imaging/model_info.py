"""What identifies a model and rebuilds its network, without torch: outputs name the model they came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ArchSpec:
    """What is needed to rebuild the network: encoder, input size, channels."""

    encoder_name: str = "tu-mobilenetv3_large_100"
    input_size: int = 160
    in_channels: int = 1
    classes: int = 1
    encoder_output_stride: int = 16
    decoder_channels: int = 128

    def __post_init__(self) -> None:
        if self.input_size < 32 or self.input_size % 16:
            raise ValueError(f"arch input_size must be a multiple of 16 and >= 32, not {self.input_size}.")
        if self.in_channels != 1:
            raise ValueError(f"arch in_channels must be 1 (grayscale MR), not {self.in_channels}.")
        if self.classes not in (1, 2):
            raise ValueError(f"arch classes must be 1 (brain logit) or 2 (background, brain), not {self.classes}.")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchSpec:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass(frozen=True)
class ModelInfo:
    """Identity of a loaded model: written into every SEG it makes."""

    name: str
    version: str
    arch: ArchSpec
    metrics: dict[str, float] = field(default_factory=dict)
    card: dict[str, str] = field(default_factory=dict)
