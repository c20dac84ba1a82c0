"""The self-describing part of a checkpoint: everything needed to rebuild and feed the network."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

# The names of the normalisation schemes; model/preprocessing.py holds one function per name (NORMALISERS).
NORMALISATION_SCHEMES = ("zscore_per_slice", "fixed", "seed")
# Schemes whose statistics depend on the window the network sees: computed on each crop (training) and each
# tile (inference) instead of on the whole slice (model.preprocessing.slice_input / window_input).
PER_WINDOW_SCHEMES = ("seed",)
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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Plausible ranges of a checkpoint's numbers, checked when its JSON is read: a NaN or an absurd value gives empty
# masks (pet_scale NaN), litre-sized ones (ct_scale inf), an 8 TiB allocation (crop_size 2^20) or fails every
# case (spacing_mm 1e-3) only after the weights load. Every other number of these dataclasses must be finite.
NUMBER_RANGES: dict[str, tuple[float, float]] = {
    "ct_clip": (-10000.0, 10000.0), "pet_clip": (1e-3, 1000.0), "pet_scale": (1e-3, 1000.0),
    "ct_center": (-5000.0, 5000.0), "ct_scale": (1e-3, 10000.0), "body_threshold_hu": (-1100.0, 1000.0),
    "crop_size": (32, 2048), "spacing_mm": (0.4, 20.0), "decoder_channels": (1, 4096), "threshold": (0.0, 1.0),
}


def check_numbers(config: Any) -> None:
    """Every numeric field of a config dataclass (a field whose default is a number or a tuple of numbers)
    holds finite numbers, within NUMBER_RANGES where the field has one; ValueError names the field."""
    for item in dataclasses.fields(config):
        default = item.default
        sample = default[0] if isinstance(default, tuple) and default else default
        if not _is_number(sample):
            continue
        value = getattr(config, item.name)
        values = value if isinstance(value, (tuple, list)) else (value,)
        low, high = NUMBER_RANGES.get(item.name, (-math.inf, math.inf))
        if not all(_is_number(v) and math.isfinite(v) and low <= v <= high for v in values):
            where = f" in [{low:g}, {high:g}]" if item.name in NUMBER_RANGES else ""
            raise ValueError(f"{item.name} must be finite numbers{where}, got {value!r}")


@dataclass(frozen=True)
class NormalisationConfig:
    """How raw SUV and HU become network input (model/preprocessing.py NORMALISERS has one function per scheme).

    ``zscore_per_slice``: CT clipped to ``ct_clip``, then each channel z-scored per slice over the body's
    voxels (CT above ``body_threshold_hu``), so a slice normalises the same however it is cropped or tiled.
    A slice with fewer body voxels than model.preprocessing.MIN_BODY_PIXELS takes its statistics from the
    whole slice instead, and the standard deviation is floored at about the noise of each modality
    (model.preprocessing.ZSCORE_STD_FLOOR), so every slice gives finite, bounded values. This is not the
    seed code's scheme; it exists because its statistics do not depend on where a crop or tile falls, and its
    floors keep near-empty slices bounded.
    ``seed`` is the seed code's (ZZZsn/MICCAI2022-autopet, PETCT_train_v2/data_loader_petct.py with norm
    'z-score' and docker/test_loader.py): CT clipped to ``ct_clip``, then per window the network sees (the
    training crop, each inference tile): PET z-scored over its voxels with PET != 0 (left as it is when the
    window's PET is all 0), CT over its voxels with CT != ct_clip[0] (``ct - min`` when the window's CT is
    constant). Population standard deviation as numpy's. Where the seed divides by zero (one PET value, or
    air and one uniform tissue value) the standard deviation is floored as for zscore_per_slice, which real
    slices never reach. The tiles of a body wider than the crop each take their own statistics, so one pixel
    in two tiles is normalised twice, differently (the seed's single 256x256 crop cut such bodies off).
    ``fixed`` is one global scaling for every slice:
    ``clip(SUV, 0, pet_clip) / pet_scale`` and ``(clip(HU, *ct_clip) - ct_center) / ct_scale``.
    """

    scheme: str = "fixed"  # one of NORMALISATION_SCHEMES
    ct_clip: tuple[float, float] = (-1000.0, 1000.0)
    pet_clip: float = 50.0
    pet_scale: float = 5.0
    ct_center: float = 0.0
    ct_scale: float = 500.0
    # A voxel belongs to the body where CT is above this; the crop and the z-score statistics use it.
    body_threshold_hu: float = -500.0

    def __post_init__(self) -> None:
        if self.scheme not in NORMALISATION_SCHEMES:
            raise ValueError(f"normalisation scheme must be one of {list(NORMALISATION_SCHEMES)}, "
                             f"got {self.scheme!r}")
        check_numbers(self)  # first: the comparisons below need numbers
        if not self.ct_clip[0] < self.ct_clip[1]:
            raise ValueError(f"normalisation ct_clip must be (low, high) with low < high, got {list(self.ct_clip)}")
        if self.pet_scale <= 0 or self.ct_scale <= 0 or self.pet_clip <= 0:
            raise ValueError("normalisation pet_clip, pet_scale and ct_scale must be positive")

    @property
    def per_window(self) -> bool:
        """Whether the statistics are the window's (PER_WINDOW_SCHEMES) rather than the whole slice's."""
        return self.scheme in PER_WINDOW_SCHEMES


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

    def __post_init__(self) -> None:
        # A checkpoint's JSON is input: every value is checked here, so that a bad one is one line, not a
        # traceback from deep inside the network or the preprocessing.
        if not isinstance(self.encoder, str) or not ENCODER_NAME.fullmatch(self.encoder):
            raise ValueError(f"encoder must be a timm model name (letters, digits, '_' and '.'; nothing is "
                             f"downloaded, so no 'hf-hub:' names), got {self.encoder!r}")
        # One decoder stage per encoder stage; segmentation_models_pytorch builds U-Nets of depth 3 to 5.
        if not (3 <= len(self.decoder_channels) <= 5 and all(_is_int(c) and c > 0 for c in self.decoder_channels)):
            raise ValueError(f"decoder_channels must be 3 to 5 positive integers, got {list(self.decoder_channels)}")
        if tuple(self.channels) != CHANNEL_ORDER:
            raise ValueError(f"channels must be {list(CHANNEL_ORDER)}, got {list(self.channels)}")
        if not _is_int(self.crop_size) or self.crop_size <= 0 or self.crop_size % 32:
            raise ValueError(f"crop_size must be a positive multiple of 32, got {self.crop_size!r}")
        if not (len(self.spacing_mm) == 2 and all(_is_number(s) and 0 < s < math.inf for s in self.spacing_mm)):
            raise ValueError(f"spacing_mm must be two positive finite numbers (mm), got {list(self.spacing_mm)}")
        if not (_is_number(self.threshold) and 0.0 < self.threshold < 1.0):
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold!r}")
        if not is_orientation_code(self.orientation):
            raise ValueError(f"orientation must be a code such as 'LPS' (one of R/L, A/P, S/I each), "
                             f"got {self.orientation!r}")
        if not isinstance(self.provenance, dict):
            raise ValueError(f"provenance must be a JSON object, got {self.provenance!r}")
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
