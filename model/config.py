"""The self-describing part of a checkpoint: everything needed to rebuild and feed the network."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

# NormalisationConfig lives with its schemes (model.preprocessing.NORMALISERS); importable from here as always.
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


def is_orientation_code(value: object) -> bool:
    """True for a three-letter code naming each of R/L, A/P and S/I exactly once ("LPS", "RAI", "SLP")."""
    return (isinstance(value, str) and len(value) == 3
            and all(sum(letter in pair for letter in value) == 1 for pair in ORIENTATION_AXES))


# What a model is for, as its card states it, and the line its outputs carry where a reader looks (the console,
# the review page's header, each picture's title, report.json). "unstated": a checkpoint written before cards.
PURPOSE_WARNINGS: dict[str, str | None] = {
    "demo": "demo weights: not for clinical or research use",
    "research": "research weights: not for clinical use",
    "unstated": None,
}


@dataclass(frozen=True)
class ModelCard:
    """What a checkpoint is: its purpose (``PURPOSE_WARNINGS``), what it was trained on, and its figures on data
    it was not trained on (``held_out``: ``data`` in words, ``cases`` and the official metrics). Part of the
    config, so that it travels with the weights and their identity."""

    purpose: str = "unstated"
    trained_on: str = ""
    held_out: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.purpose not in PURPOSE_WARNINGS:
            raise ValueError(f"card.purpose must be one of {list(PURPOSE_WARNINGS)}, got {self.purpose!r}")
        if not isinstance(self.trained_on, str):
            raise ValueError(f"card.trained_on must be a text, got {self.trained_on!r}")
        if not isinstance(self.held_out, dict) or not all(
                isinstance(value, str) or value is None or is_number(value) for value in self.held_out.values()):
            raise ValueError(f"card.held_out must be an object of texts and numbers, got {self.held_out!r}")

    @property
    def warning(self) -> str | None:
        """The line a reader must see beside the outputs of these weights, or None."""
        return PURPOSE_WARNINGS[self.purpose]

    def summary(self) -> str:
        """One line: purpose, what it was trained on, its held-out Dice, FPV and FNV."""
        parts = [f"{self.purpose} model"]
        if self.trained_on:
            parts.append(f"trained on {self.trained_on}")
        figures = self.held_out
        if figures:
            numbers = ", ".join(f"{label} {figures[key]:.3g}" for key, label in
                                (("dice", "Dice"), ("fpv_ml", "FPV ml"), ("fnv_ml", "FNV ml"))
                                if is_number(figures.get(key)))
            parts.append(f"held out: {numbers or 'no figures'} on {figures.get('data') or 'unnamed data'}")
        return "; ".join(parts)


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
