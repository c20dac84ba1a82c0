"""The self-describing part of a checkpoint: everything needed to rebuild and feed the network."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

NormalisationScheme = Literal["zscore_per_slice", "fixed"]
CHANNEL_ORDER = ("PET_SUV", "CT_HU")


@dataclass(frozen=True)
class NormalisationConfig:
    """How raw SUV and HU become network input.

    ``zscore_per_slice`` is the seed code's scheme: CT clipped to ``ct_clip``, then each channel z-scored
    per slice over the body's voxels. ``fixed`` is one global scaling for every slice:
    ``clip(SUV, 0, pet_clip) / pet_scale`` and ``(clip(HU, *ct_clip) - ct_center) / ct_scale``.
    """

    scheme: NormalisationScheme = "fixed"
    ct_clip: tuple[float, float] = (-1000.0, 1000.0)
    pet_clip: float = 50.0
    pet_scale: float = 5.0
    ct_center: float = 0.0
    ct_scale: float = 500.0
    # A voxel belongs to the body where CT is above this; the crop and the z-score statistics use it.
    body_threshold_hu: float = -500.0


@dataclass(frozen=True)
class ModelConfig:
    """Architecture, input contract and provenance of one trained network."""

    encoder: str = "regnety_160"
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    channels: tuple[str, ...] = CHANNEL_ORDER
    normalisation: NormalisationConfig = field(default_factory=NormalisationConfig)
    crop_size: int = 256
    # In-plane spacing (mm, x and y) of the training data; inputs further than 10 % off are resampled.
    spacing_mm: tuple[float, float] = (2.0364, 2.0364)
    threshold: float = 0.5
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if tuple(self.channels) != CHANNEL_ORDER:
            raise ValueError(f"channels must be {list(CHANNEL_ORDER)}, got {list(self.channels)}")
        if self.crop_size % 32:
            raise ValueError(f"crop_size must be a multiple of 32, got {self.crop_size}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        values = dict(data)
        if "normalisation" in values:
            norm = dict(values["normalisation"])
            if "ct_clip" in norm:
                norm["ct_clip"] = tuple(norm["ct_clip"])
            values["normalisation"] = NormalisationConfig(**norm)
        for key in ("decoder_channels", "channels", "spacing_mm"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def same_input_contract(self, other: ModelConfig) -> bool:
        """True when two networks can share one preprocessing pass (needed for an ensemble)."""
        return (
            self.normalisation == other.normalisation
            and self.crop_size == other.crop_size
            and self.spacing_mm == other.spacing_mm
            and self.channels == other.channels
        )
