"""The numbers of a checkpoint's config, checked when its JSON is read (model.config, model.preprocessing), and
the plausible ranges of numbers about a patient (a light module: process.py checks its arguments with it
before the heavy imports)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Plausible ranges of a checkpoint's numbers, checked when its JSON is read: a NaN or an absurd value gives empty
# masks (pet_scale NaN), litre-sized ones (ct_scale inf), an 8 TiB allocation (crop_size 2^20) or fails every
# case (spacing_mm 1e-3) only after the weights load. Every other number of these dataclasses must be finite.
NUMBER_RANGES: dict[str, tuple[float, float]] = {
    "ct_clip": (-10000.0, 10000.0), "pet_clip": (1e-3, 1000.0), "pet_scale": (1e-3, 1000.0),
    "ct_center": (-5000.0, 5000.0), "ct_scale": (1e-3, 10000.0), "body_threshold_hu": (-1100.0, 1000.0),
    "crop_size": (32, 2048), "spacing_mm": (0.4, 20.0), "decoder_channels": (1, 4096), "threshold": (0.0, 1.0),
}


# A patient's body weight (kg), the one range of --weight-kg (process.py) and of the weight a DICOM PET's SUV was
# computed with (studies.checks): a neonate is 2 kg and more; 0.075 is grams taken for kg, 75000 grams for kg.
PLAUSIBLE_WEIGHT_KG = (1.0, 1000.0)


def check_numbers(config: Any) -> None:
    """Every numeric field of a config dataclass (a field whose default is a number or a tuple of numbers)
    holds finite numbers, within NUMBER_RANGES where the field has one; ValueError names the field."""
    for item in dataclasses.fields(config):
        default = item.default
        sample = default[0] if isinstance(default, tuple) and default else default
        if not is_number(sample):
            continue
        value = getattr(config, item.name)
        values = value if isinstance(value, (tuple, list)) else (value,)
        low, high = NUMBER_RANGES.get(item.name, (-math.inf, math.inf))
        if not all(is_number(v) and math.isfinite(v) and low <= v <= high for v in values):
            where = f" in [{low:g}, {high:g}]" if item.name in NUMBER_RANGES else ""
            raise ValueError(f"{item.name} must be finite numbers{where}, got {value!r}")
