"""Imaging: the CT's texture and noise, the PET's blur and count-dependent noise."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.special import ndtri

from phantoms.geometry import Canvas, filtered_sd
from phantoms.tissues import AIR, CORTEX, GAS, HU, LUNG, MARROW, TABLE


def white_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Unit-variance noise from random bytes through 256 quantiles of the normal: a fraction of the cost of
    Gaussian draws, and indistinguishable from them once smoothed or at the noise levels used here."""
    levels = ndtri((np.arange(256) + 0.5) / 256)
    levels = (levels / levels.std()).astype(np.float32)
    return levels[np.frombuffer(rng.bytes(math.prod(shape)), dtype=np.uint8).reshape(shape)]


def _occupied(canvas: Canvas, exclude: Sequence[int], margin_mm: float) -> tuple[slice, slice, slice]:
    """The box of every tissue but ``exclude`` (as painted), grown by ``margin_mm``: outside it there is air."""
    boxes = [e for t, e in canvas.extent.items() if t not in exclude]
    shape = canvas.labels.shape
    if not boxes:
        return slice(0, 0), slice(0, 0), slice(0, 0)
    out = []
    for axis, spacing in zip(range(3), (canvas.spacing[2], canvas.spacing[1], canvas.spacing[0]), strict=True):
        grow = math.ceil(margin_mm / spacing)
        lo = max(min(b[2 * axis] for b in boxes) - grow, 0)
        hi = min(max(b[2 * axis + 1] for b in boxes) + grow, shape[axis])
        out.append(slice(lo, hi))
    return out[0], out[1], out[2]


def ct_image(canvas: Canvas, hu: np.ndarray, rng: np.random.Generator, features: dict) -> np.ndarray:
    """HU: the tissues' values (lesions already in ``hu``) plus their texture and the scanner's noise."""
    noise_sd = rng.uniform(5, 18)
    features["ct_noise_hu"] = round(noise_sd, 1)
    white = white_noise(rng, hu.shape)
    sd = np.zeros(256, dtype=np.float32)
    for tissue, (_, texture) in HU.items():
        sd[tissue] = texture
    spacing = canvas.spacing
    sigma = [2.5 / spacing[2], 2.5 / spacing[1], 2.5 / spacing[0]]
    box = _occupied(canvas, (AIR,), 0.0)  # air has no texture
    texture = gaussian_filter(white[box], sigma, truncate=3.0)
    texture *= sd[canvas.labels[box]] / np.float32(filtered_sd(sigma))
    hu[box] += texture
    del texture
    white *= np.float32(noise_sd)
    hu += white
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def pet_image(canvas: Canvas, activity: np.ndarray, rng: np.random.Generator, features: dict,
               large_patient: float) -> np.ndarray:
    """Blur to the scanner's resolution, then noise whose variance is proportional to the local counts."""
    spacing = canvas.spacing
    fwhm = rng.uniform(5.0, 7.0)
    sigma_mm = fwhm / (2 * math.sqrt(2 * math.log(2)))
    sigma = [sigma_mm / spacing[2], sigma_mm / spacing[1], sigma_mm / spacing[0]]
    # Outside the body's box (grown by the blur's reach) there are no counts: nothing to blur, no noise.
    box = _occupied(canvas, (AIR, TABLE), 3 * sigma_mm + max(spacing))
    pet = np.zeros(activity.shape, dtype=np.float32)
    blurred = gaussian_filter(activity[box], sigma, truncate=3.0, mode="constant")
    # Coefficient of variation in the liver (SUV about 2) from 6 % to 20 %; larger patients are noisier.
    cov = float(np.clip(rng.uniform(0.06, 0.16) * large_patient, 0.05, 0.22))
    variance_per_suv = 2 * cov * cov
    grain = rng.uniform(0.35, 0.6) * sigma_mm  # noise grain, a fraction of the resolution
    grain_sigma = [grain / spacing[2], grain / spacing[1], grain / spacing[0]]
    noise = gaussian_filter(white_noise(rng, blurred.shape), grain_sigma, truncate=3.0)
    noise *= np.sqrt(np.maximum(blurred, 0) * np.float32(variance_per_suv / filtered_sd(grain_sigma) ** 2))
    blurred += noise
    del noise
    pet[box] = np.maximum(blurred, 0)
    features.update(fwhm_mm=round(fwhm, 2), noise_cov_liver=round(cov, 3))
    return pet


def tissue_hu(rng: np.random.Generator, age: int) -> np.ndarray:
    """Mean HU per tissue label for one study: HU's means jittered, bone and lung drawn, marrow by age."""
    hu_mean = np.zeros(256, dtype=np.float32)
    for tissue, (mean, _) in HU.items():
        hu_mean[tissue] = mean + (rng.normal(0, 5) if tissue not in (AIR, GAS) else 0)
    hu_mean[CORTEX] = rng.uniform(500, 1100)
    hu_mean[MARROW] = rng.uniform(150, 330) - 1.2 * (age - 50)
    hu_mean[LUNG] = rng.uniform(-880, -780)
    hu_mean[TABLE] = rng.uniform(-600, -150)
    return hu_mean
