"""Slice preprocessing shared by training and inference: sanitising, normalisation, body box, tiles.

Everything works on torch tensors of shape (N, H, W), so it runs on whichever device holds the batch. The
normalisation schemes are one table, NORMALISERS: NormalisationConfig accepts its names, and each entry
carries the function, whether its statistics are per window, and any check of the config it needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model.geometry import CT_FILL_HU
from model.validation import check_numbers

# Slices with fewer body pixels than this count as empty (specks of noise, a sliver of couch): training
# never samples them and inference does not segment them.
MIN_BODY_PIXELS = 16
# Floors of the z-score's standard deviation (PET in SUV, CT in HU), about the noise of each modality: a
# slice that varies less than its noise has no structure to stretch, and its values stay bounded.
ZSCORE_STD_FLOOR = (0.1, 20.0)


@dataclass(frozen=True)
class NormalisationConfig:
    """How raw SUV and HU become network input: ``scheme`` names an entry of NORMALISERS (whose function's
    docstring says what it does); the CT is clipped to ``ct_clip`` first, whatever the scheme."""

    scheme: str = "fixed"  # a name of NORMALISERS
    ct_clip: tuple[float, float] = (-1000.0, 1000.0)
    pet_clip: float = 50.0
    pet_scale: float = 5.0
    ct_center: float = 0.0
    ct_scale: float = 500.0
    # A voxel belongs to the body where CT is above this; the crop and the z-score statistics use it.
    body_threshold_hu: float = -500.0

    def __post_init__(self) -> None:
        if self.scheme not in NORMALISERS:
            raise ValueError(f"normalisation scheme must be one of {list(NORMALISERS)}, got {self.scheme!r}")
        check_numbers(self)  # first: the comparisons below need numbers
        if not self.ct_clip[0] < self.ct_clip[1]:
            raise ValueError(f"normalisation ct_clip must be (low, high) with low < high, got {list(self.ct_clip)}")
        if self.pet_scale <= 0 or self.ct_scale <= 0 or self.pet_clip <= 0:
            raise ValueError("normalisation pet_clip, pet_scale and ct_scale must be positive")
        NORMALISERS[self.scheme].check(self)

    @property
    def per_window(self) -> bool:
        """Whether the statistics are the window's (the crop's, the tile's) rather than the whole slice's."""
        return NORMALISERS[self.scheme].per_window


def _finite_float32(values: torch.Tensor, fill: float) -> torch.Tensor:
    """A float32 copy of ``values`` with NaN and infinities set to ``fill``; integers (a CT's int16) are finite:
    their conversion is the copy, without a second pass."""
    if not values.is_floating_point():
        return values.float()
    return torch.nan_to_num(values.float(), nan=fill, posinf=fill, neginf=fill)


def sanitise(pet: torch.Tensor, ct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 copies with NaN/Inf replaced by background: SUV 0, CT air."""
    return _finite_float32(pet, 0.0), _finite_float32(ct, CT_FILL_HU)


def body_mask(ct: torch.Tensor, norm: NormalisationConfig) -> torch.Tensor:
    return ct > norm.body_threshold_hu


def slices_with_body(ct: torch.Tensor, norm: NormalisationConfig) -> torch.Tensor:
    """(N,) bool: the slices with at least MIN_BODY_PIXELS body pixels, the only ones trained on or segmented."""
    return _enough_body(body_mask(ct, norm))


def _enough_body(body: torch.Tensor) -> torch.Tensor:
    # Counted as bytes into int32 (a slice holds far fewer than 2**31 pixels): a bool tensor's own sum widens
    # every element to int64 first, ten times slower on a CPU.
    return body.view(torch.uint8).sum(dim=(1, 2), dtype=torch.int32) >= MIN_BODY_PIXELS


def _fixed(pet: torch.Tensor, ct: torch.Tensor, norm: NormalisationConfig) -> torch.Tensor:
    """One global scaling for every slice: ``clip(SUV, 0, pet_clip) / pet_scale`` and
    ``(clip(HU, *ct_clip) - ct_center) / ct_scale``."""
    pet_n = pet.clamp(0.0, norm.pet_clip) / norm.pet_scale
    ct_n = (ct - norm.ct_center) / norm.ct_scale
    return torch.stack((pet_n, ct_n), dim=1)


def _zscore_per_slice(pet: torch.Tensor, ct: torch.Tensor, norm: NormalisationConfig) -> torch.Tensor:
    """Each channel z-scored per slice over the body's voxels (CT above ``body_threshold_hu``), so a slice and
    its body-cropped version normalise identically (training reads body-cropped slices) however it is cropped
    or tiled. A slice with fewer body voxels than MIN_BODY_PIXELS (air, or PET beyond the CT's range) takes the
    whole slice's statistics; the standard deviation is floored at about the noise of each modality
    (ZSCORE_STD_FLOOR), so every slice gives finite, bounded values. Not the seed code's scheme: it exists
    because its statistics do not depend on where a crop or tile falls."""
    body = body_mask(ct, norm)
    region = torch.where(slices_with_body(ct, norm)[:, None, None], body, torch.ones_like(body)).float()
    count = region.sum(dim=(1, 2), keepdim=True)
    channels = []
    for channel, floor in zip((pet, ct), ZSCORE_STD_FLOOR, strict=True):
        mean = (channel * region).sum(dim=(1, 2), keepdim=True) / count
        var = (((channel - mean) ** 2) * region).sum(dim=(1, 2), keepdim=True) / count
        channels.append((channel - mean) / var.sqrt().clamp(min=floor))
    return torch.stack(channels, dim=1)


def _zscore_where_seed_would(x: torch.Tensor, selected: torch.Tensor, floor: float,
                             out: torch.Tensor) -> torch.Tensor:
    """x z-scored per slice over its ``selected`` voxels as numpy's mean and std would, with ``floor`` in place
    of the standard deviation only where the seed's would be 0 (every selected value equal, or none selected:
    it divides by zero there). A small but nonzero standard deviation (PET noise of 0.02 SUV) is kept, as the
    seed keeps it. Constancy is tested on the values, not on a rounded variance. ``x`` must be finite where
    it is not selected (the seed leaves out the voxels equal to one number). Written into ``out`` (x's shape),
    which is returned; the deviations are computed once, for the variance and the result."""
    chosen = selected.to(x.dtype)
    count = chosen.sum(dim=(1, 2), keepdim=True).clamp(min=1.0)
    masked = x * chosen
    mean = masked.sum(dim=(1, 2), keepdim=True) / count
    centred = torch.sub(x, mean, out=out)
    squares = centred * centred  # (x - mean) ** 2, bit for bit
    std = (squares.mul_(chosen).sum(dim=(1, 2), keepdim=True) / count).sqrt()
    # The selected values' extremes by arithmetic, not where() (ten times slower on a CPU): a selected value plus
    # 0 stays itself, a value left out (x * 0 = 0) becomes the lowest float for the max and the highest for the
    # min, so with nothing selected high < low.
    left_out = torch.sub(1.0, chosen, out=squares)
    big = torch.finfo(x.dtype).max
    high = torch.add(masked, left_out, alpha=-big).amax(dim=(1, 2), keepdim=True)
    low = torch.add(masked, left_out, alpha=big).amin(dim=(1, 2), keepdim=True)
    degenerate = ~(high > low)
    return centred.div_(torch.where(degenerate, torch.full_like(std, floor), std))


def _seed(pet: torch.Tensor, ct: torch.Tensor, norm: NormalisationConfig) -> torch.Tensor:
    """The seed code's per-window z-score; ``ct`` is already clipped.

    As in ZZZsn/MICCAI2022-autopet (PETCT_train_v2/data_loader_petct.py with norm 'z-score' and
    docker/test_loader.py), per window the network sees (the training crop, each inference tile):
    ``if pet.max() != 0`` z-score over pet != 0 (else left as it is); ``if ct.max() - ct.min() == 0: ct -
    ct.min()`` else z-score over ct != ct_clip[0] (-1000, the clip's floor). Population standard deviation as
    numpy's. Only where the seed divides by zero (every selected value equal: one PET value, or air and one
    uniform tissue value) is the standard deviation replaced, by ZSCORE_STD_FLOOR; elsewhere it is the
    window's, however small. The tiles of a body wider than the crop each take their own statistics, so one
    pixel in two tiles is normalised twice, differently (the seed's single 256x256 crop cut such bodies off).
    """
    pet_floor, ct_floor = ZSCORE_STD_FLOOR
    out = pet.new_empty((pet.shape[0], 2, *pet.shape[1:]))  # each channel computed in place, not stacked after
    pet_n = _zscore_where_seed_would(pet, pet != 0, pet_floor, out[:, 0])
    pet_idle = (pet.amax(dim=(1, 2)) == 0)[:, None, None]
    if pet_idle.any():  # rare (a window without PET): only then the pass that keeps those windows as they are
        pet_n.copy_(torch.where(pet_idle, pet, pet_n))
    ct_n = _zscore_where_seed_would(ct, ct != norm.ct_clip[0], ct_floor, out[:, 1])
    ct_min = ct.amin(dim=(1, 2), keepdim=True)
    constant = ct.amax(dim=(1, 2), keepdim=True) == ct_min
    if constant.any():  # rare (a window of one CT value)
        ct_n.copy_(torch.where(constant, ct - ct_min, ct_n))
    return out


def _no_check(norm: NormalisationConfig) -> None:
    """The checks every scheme has (NormalisationConfig.__post_init__) are all this scheme needs."""


@dataclass(frozen=True)
class Normaliser:
    """One normalisation scheme: (N, H, W) SUV and clipped HU to the network's (N, 2, H, W) input."""

    normalise: Callable[[torch.Tensor, torch.Tensor, NormalisationConfig], torch.Tensor]
    # Statistics of the window the network sees: computed on each crop (training) and each tile (inference)
    # instead of on the whole slice (slice_input / window_input).
    per_window: bool = False
    # What this scheme needs of a NormalisationConfig beyond the common checks; raises ValueError.
    check: Callable[[NormalisationConfig], None] = _no_check


# The normalisation schemes by the names a checkpoint's config gives; adding one is one entry.
NORMALISERS: dict[str, Normaliser] = {
    "zscore_per_slice": Normaliser(_zscore_per_slice),
    "fixed": Normaliser(_fixed),
    "seed": Normaliser(_seed, per_window=True),
}
NORMALISATION_SCHEMES = tuple(NORMALISERS)


def normalise(pet: torch.Tensor, ct: torch.Tensor, norm: NormalisationConfig) -> torch.Tensor:
    """(N, H, W) SUV and HU to the network's (N, 2, H, W) input, as ``norm`` says (CT clipped to ct_clip)."""
    return NORMALISERS[norm.scheme].normalise(pet, ct.clamp(norm.ct_clip[0], norm.ct_clip[1]), norm)


def slice_input(pet: torch.Tensor, ct: torch.Tensor, norm: NormalisationConfig) -> torch.Tensor:
    """(N, 2, H, W) that crops and tiles are cut from: the normalised slices, or for a per-window scheme
    the raw (SUV, HU) pair, which window_input then normalises window by window."""
    if norm.per_window:
        return torch.stack((pet, ct), dim=1)
    return normalise(pet, ct, norm)


def window_input(windows: torch.Tensor, norm: NormalisationConfig) -> torch.Tensor:
    """The network's input from (B, 2, h, w) windows cut from slice_input: per-window schemes normalise here,
    with the window's own statistics (as the seed did on its crop); the others are normalised already."""
    if norm.per_window:
        return normalise(windows[:, 0], windows[:, 1], norm)
    return windows


def padded_slices(pet: torch.Tensor, ct: torch.Tensor, crop: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                          tuple[int, int]]:
    """Raw (N, H, W) slices as every window is cut from them: sanitised (sanitise) and padded with background
    to at least the crop (pad_to_crop); returns the (top, left) pad. Training and inference both start here."""
    pet, ct = sanitise(pet, ct)
    return pad_to_crop(pet, ct, crop)


# A window of a batch of slices: (slice index, y, x, height, width) in the padded slices.
WindowBox = tuple[int, int, int, int, int]


def network_input(image: torch.Tensor, windows: Sequence[WindowBox], norm: NormalisationConfig) -> torch.Tensor:
    """THE network input: (B, 2, h, w) for ``windows`` (of one shape) of ``image``, slice_input of
    padded_slices. Training (train.data.SliceDataset), fit's validation and inference (model.inference.Tiles)
    all build it here, so a window of a slice gives the same input wherever it is taken
    (tests/model/test_preprocessing.py's parity test holds training's against deployment's)."""
    cuts = [image[index, :, y:y + height, x:x + width] for index, y, x, height, width in windows]
    return window_input(torch.stack(cuts), norm)


def body_boxes(ct: torch.Tensor, norm: NormalisationConfig) -> np.ndarray:
    """Per slice (y0, y1, x0, x1), half-open, of the body; rows of -1 where a slice has no body."""
    body = body_mask(ct, norm)
    n = body.shape[0]
    boxes = np.full((n, 4), -1, dtype=np.int64)
    has_body = _enough_body(body).cpu().numpy()
    as_bytes = body.view(torch.uint8)  # a byte's max is any() of the row or column, without a bool reduction
    rows = as_bytes.amax(dim=2).cpu().numpy()
    cols = as_bytes.amax(dim=1).cpu().numpy()
    for i in np.flatnonzero(has_body):
        ys = np.flatnonzero(rows[i])
        xs = np.flatnonzero(cols[i])
        boxes[i] = (ys[0], ys[-1] + 1, xs[0], xs[-1] + 1)
    return boxes


def window_starts(lo: int, hi: int, length: int, crop: int, overlap: float) -> list[int]:
    """Starts of crop-wide windows along one axis of ``length`` that cover [lo, hi).

    One window centred on the span when it fits; otherwise the fewest windows overlapping by at least
    ``overlap`` of the crop that cover it, spread evenly. ``length`` must be at least ``crop``. ``overlap``
    has no default here: its one home is model.inference.InferenceConfig.tile_overlap.
    """
    if length < crop:
        raise ValueError(f"axis of {length} is shorter than the crop {crop}; pad first")
    extent = hi - lo
    if extent <= crop:
        centre = (lo + hi) // 2
        return [min(max(centre - crop // 2, 0), length - crop)]
    stride = crop - round(overlap * crop)
    count = math.ceil((extent - crop) / stride) + 1
    starts = np.linspace(lo, hi - crop, count).round().astype(int)
    return sorted({min(max(int(s), 0), length - crop) for s in starts})


def window_extent(lo: int, hi: int, crop: int, multiple: int, shrink: bool) -> int:
    """Window length along one axis for a body spanning [lo, hi): the crop, or with ``shrink`` the span rounded
    up to ``multiple`` (the U-Net's input must divide by it) when that is smaller than the crop."""
    if not shrink:
        return crop
    return min(crop, max(multiple, math.ceil((hi - lo) / multiple) * multiple))


def body_windows(box: Sequence[int], shape: tuple[int, int], crop: int, multiple: int, overlap: float,
                 shrink: bool) -> list[tuple[int, int, int, int]]:
    """(y, x, height, width) of the windows covering a body box (y0, y1, x0, x1) in a padded slice of ``shape``.

    Along an axis where the body fits in the crop there is one window centred on it; where it does not,
    crop-wide windows overlapping by at least ``overlap``. The network is fully convolutional, so with
    ``shrink`` a window is only as large as the body needs (legs and neck: a fraction of the crop).
    """
    y0, y1, x0, x1 = (int(v) for v in box)
    height = window_extent(y0, y1, crop, multiple, shrink)
    width = window_extent(x0, x1, crop, multiple, shrink)
    ys = window_starts(y0, y1, shape[0], height, overlap)
    xs = window_starts(x0, x1, shape[1], width, overlap)
    return [(y, x, height, width) for y in ys for x in xs]


def pad_to_crop(pet: torch.Tensor, ct: torch.Tensor, crop: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                      tuple[int, int]]:
    """Pad (N, H, W) slices with background up to at least crop x crop; returns the (top, left) pad."""
    _, h, w = pet.shape
    pad_h, pad_w = max(crop - h, 0), max(crop - w, 0)
    if not pad_h and not pad_w:
        return pet, ct, (0, 0)
    top, left = pad_h // 2, pad_w // 2
    padding = (left, pad_w - left, top, pad_h - top)
    pet = torch.nn.functional.pad(pet, padding, value=0.0)
    ct = torch.nn.functional.pad(ct, padding, value=CT_FILL_HU)
    return pet, ct, (top, left)
