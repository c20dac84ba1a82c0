"""The self-describing part of a checkpoint: everything needed to rebuild and feed the network."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from model.card import ModelCard  # what the weights are: a light module of its own (the review page reads it)
from model.preprocessing import NormalisationConfig
from model.validation import check_numbers, is_int, is_number

CHANNEL_ORDER = ("PET_SUV", "CT_HU")
# timm model names, with an optional pretrained tag (regnety_160, regnety_160.swag_ft_in1k).
ENCODER_NAME = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?")
# Orientation codes as SimpleITK's DICOMOrient names them: the patient direction each array axis (x, y, z)
# runs towards, one letter of each pair; an identity direction is "LPS". That is what the phantoms and every
# store prepared before the field existed have, so it is the value of a checkpoint without one.
ORIENTATION_AXES = ("RL", "AP", "SI")
DEFAULT_ORIENTATION = "LPS"
# Output heads by name, with the number of output channels: "one_logit" (a sigmoid of one logit, what the seed's
# container deploys and what every checkpoint written before the field existed has) or "two_class_softmax" (the
# seed's training head: background and lesion logits, softmax; the lesion probability is channel 1).
HEADS = {"one_logit": 1, "two_class_softmax": 2}
DEFAULT_HEAD = "one_logit"


def is_orientation_code(value: object) -> bool:
    """True for a three-letter code naming each of R/L, A/P and S/I exactly once ("LPS", "RAI", "SLP")."""
    return (isinstance(value, str) and len(value) == 3
            and all(sum(letter in pair for letter in value) == 1 for pair in ORIENTATION_AXES))


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
    # The orientation of the training slices: inference reorients every input to it (model.geometry.reorient).
    orientation: str = DEFAULT_ORIENTATION
    # The output head (HEADS); a checkpoint without the field has the one-logit head.
    head: str = DEFAULT_HEAD
    provenance: dict[str, Any] = field(default_factory=dict)
    card: ModelCard = field(default_factory=ModelCard)

    def __post_init__(self) -> None:
        # A checkpoint's JSON is input: every value is checked here, so that a bad one is one line, not a
        # traceback from deep inside the network or the preprocessing.
        if not isinstance(self.encoder, str) or not ENCODER_NAME.fullmatch(self.encoder):
            raise ValueError(f"encoder must be a timm model name (letters, digits, '_' and '.'; nothing is "
                             f"downloaded, so no 'hf-hub:' names), got {self.encoder!r}")
        # One decoder stage per encoder stage; segmentation_models_pytorch builds U-Nets of depth 3 to 5.
        if not (3 <= len(self.decoder_channels) <= 5 and all(is_int(c) and c > 0 for c in self.decoder_channels)):
            raise ValueError(f"decoder_channels must be 3 to 5 positive integers, got {list(self.decoder_channels)}")
        if tuple(self.channels) != CHANNEL_ORDER:
            raise ValueError(f"channels must be {list(CHANNEL_ORDER)}, got {list(self.channels)}")
        if not is_int(self.crop_size) or self.crop_size <= 0 or self.crop_size % 32:
            raise ValueError(f"crop_size must be a positive multiple of 32, got {self.crop_size!r}")
        if not (len(self.spacing_mm) == 2 and all(is_number(s) and 0 < s < math.inf for s in self.spacing_mm)):
            raise ValueError(f"spacing_mm must be two positive finite numbers (mm), got {list(self.spacing_mm)}")
        if not (is_number(self.threshold) and 0.0 < self.threshold < 1.0):
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold!r}")
        if not is_orientation_code(self.orientation):
            raise ValueError(f"orientation must be a code such as 'LPS' (one of R/L, A/P, S/I each), "
                             f"got {self.orientation!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {list(HEADS)}, got {self.head!r}")
        if not isinstance(self.provenance, dict):
            raise ValueError(f"provenance must be a JSON object, got {self.provenance!r}")
        if not isinstance(self.card, ModelCard):
            raise ValueError(f"card must be a JSON object (purpose, trained_on, held_out), got {self.card!r}")
        check_numbers(self)

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
        if "card" in values:
            card = values["card"]
            if not isinstance(card, dict) or set(card) - {f.name for f in dataclasses.fields(ModelCard)}:
                raise ValueError(f"card must be an object with purpose, trained_on and held_out, got {card!r}")
            values["card"] = ModelCard(**card)
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
            and self.orientation == other.orientation
        )
