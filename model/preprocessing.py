"""Slice preprocessing shared by training and inference: sanitising, normalisation, body box, tiles.

Everything works on torch tensors of shape (N, H, W), so it runs on whichever device holds the batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from model.config import NormalisationConfig
from model.geometry import CT_FILL_HU

# Slices with fewer body pixels than this count as empty (specks of noise, a sliver of couch).
MIN_BODY_PIXELS = 16


def sanitise(pet: torch.Tensor, ct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 copies with NaN/Inf replaced by background: SUV 0, CT air."""
    pet = torch.nan_to_num(pet.float(), nan=0.0, posinf=0.0, neginf=0.0)
    ct = torch.nan_to_num(ct.float(), nan=CT_FILL_HU, posinf=CT_FILL_HU, neginf=CT_FILL_HU)
    return pet, ct


def body_mask(ct: torch.Tensor, norm: NormalisationConfig) -> torch.Tensor:
    return ct > norm.body_threshold_hu


def normalise(pet: torch.Tensor, ct: torch.Tensor, norm: NormalisationConfig) -> torch.Tensor:
    """(N, H, W) SUV and HU to the network's (N, 2, H, W) input, as ``norm`` says.

    For ``zscore_per_slice`` the statistics come from the body's voxels only, so a slice and its
    body-cropped version normalise identically (training reads body-cropped slices).
    """
    ct = ct.clamp(norm.ct_clip[0], norm.ct_clip[1])
    if norm.scheme == "fixed":
        pet_n = pet.clamp(0.0, norm.pet_clip) / norm.pet_scale
        ct_n = (ct - norm.ct_center) / norm.ct_scale
        return torch.stack((pet_n, ct_n), dim=1)
    if norm.scheme != "zscore_per_slice":
        raise ValueError(f"unknown normalisation scheme {norm.scheme!r}")
    body = body_mask(ct, norm).float()
    count = body.sum(dim=(1, 2), keepdim=True).clamp(min=1.0)
    channels = []
    for channel in (pet, ct):
        mean = (channel * body).sum(dim=(1, 2), keepdim=True) / count
        var = (((channel - mean) ** 2) * body).sum(dim=(1, 2), keepdim=True) / count
        channels.append((channel - mean) / var.sqrt().clamp(min=1e-6))
    return torch.stack(channels, dim=1)


def body_boxes(ct: torch.Tensor, norm: NormalisationConfig) -> np.ndarray:
    """Per slice (y0, y1, x0, x1), half-open, of the body; rows of -1 where a slice has no body."""
    body = body_mask(ct, norm)
    n = body.shape[0]
    boxes = np.full((n, 4), -1, dtype=np.int64)
    has_body = (body.sum(dim=(1, 2)) >= MIN_BODY_PIXELS).cpu().numpy()
    rows = body.any(dim=2).cpu().numpy()
    cols = body.any(dim=1).cpu().numpy()
    for i in np.flatnonzero(has_body):
        ys = np.flatnonzero(rows[i])
        xs = np.flatnonzero(cols[i])
        boxes[i] = (ys[0], ys[-1] + 1, xs[0], xs[-1] + 1)
    return boxes


def window_starts(lo: int, hi: int, length: int, crop: int, overlap: float = 0.25) -> list[int]:
    """Starts of crop-wide windows along one axis of ``length`` that cover [lo, hi).

    One window centred on the span when it fits; otherwise the fewest windows overlapping by at least
    ``overlap`` of the crop that cover it, spread evenly. ``length`` must be at least ``crop``.
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


def tile_windows(box: np.ndarray, shape: tuple[int, int], crop: int,
                 overlap: float = 0.25) -> list[tuple[int, int]]:
    """(y, x) starts of the crop windows that cover a body box in a slice of ``shape``."""
    y0, y1, x0, x1 = (int(v) for v in box)
    ys = window_starts(y0, y1, shape[0], crop, overlap)
    xs = window_starts(x0, x1, shape[1], crop, overlap)
    return [(y, x) for y in ys for x in xs]


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
