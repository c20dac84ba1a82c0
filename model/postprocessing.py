"""Optional clean-up of the thresholded mask."""

from __future__ import annotations

from collections.abc import Sequence

import cc3d
import numpy as np

# The official autoPET metrics count components with 18-connectivity; clean up with the same notion.
CONNECTIVITY = 18


def voxel_ml(spacing: Sequence[float]) -> float:
    """Volume of one voxel in millilitres (spacing in mm, any axis order)."""
    return float(np.prod(spacing)) / 1000.0


def remove_small_components(mask: np.ndarray, spacing: Sequence[float], min_ml: float) -> np.ndarray:
    """Drop 18-connected components smaller than ``min_ml`` millilitres from a (Z, Y, X) uint8 mask."""
    min_voxels = int(np.ceil(min_ml / voxel_ml(spacing)))
    if min_voxels <= 1:
        return mask
    return cc3d.dust(mask, threshold=min_voxels, connectivity=CONNECTIVITY, in_place=False)
