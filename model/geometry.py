"""Physical-space geometry (SimpleITK): grids, overlap, resampling, orientation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import SimpleITK as sitk

CT_FILL_HU = -1024.0
# Inputs whose in-plane spacing is further than this (relative) from the model's are resampled.
SPACING_TOLERANCE = 0.10
# A direction matrix is a rotation (or a rotation and a flip) when D^T D differs from the identity by at most this
# in any entry: axes within 0.05 % of unit length and within 0.06 degrees of right angles, which moves a point
# 500 mm from the origin by at most 0.5 mm. DICOM orientations written with 4 or more decimals and a float32
# NIfTI transform are far inside it; a shear, a scale or a nearly singular matrix is far outside.
DIRECTION_TOLERANCE = 1e-3


def orthonormality_error(direction: np.ndarray | tuple[float, ...]) -> float:
    """max |D^T D - I| over the entries, for a square direction matrix (flat, row-major, as SimpleITK gives it)
    or any matrix of column vectors (a DICOM orientation's row and column cosines): 0 for a rotation; infinite
    when it holds a number that is not finite."""
    matrix = np.asarray(direction, dtype=float)
    if matrix.ndim == 1:
        side = math.isqrt(matrix.size)
        matrix = matrix.reshape(side, side)
    if not np.all(np.isfinite(matrix)):
        return float("inf")
    return float(np.max(np.abs(matrix.T @ matrix - np.eye(matrix.shape[1]))))


def same_grid(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-3) -> bool:
    """True when both images share size, spacing, origin and direction (within ``tolerance`` mm)."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tolerance)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tolerance)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-4)
    )


def physical_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned physical bounding box (min corner, max corner) of the image's voxel extents."""
    size = np.array(image.GetSize(), dtype=float)
    corners = [
        image.TransformContinuousIndexToPhysicalPoint([c - 0.5 for c in corner])
        for corner in itertools.product(*[(0.0, s) for s in size])
    ]
    points = np.array(corners)
    return points.min(axis=0), points.max(axis=0)


def overlap_by_axis(reference: sitk.Image, other: sitk.Image) -> np.ndarray:
    """Per physical axis (x, y, z), the fraction of the reference's bounding box that the other's covers."""
    ref_lo, ref_hi = physical_bounds(reference)
    oth_lo, oth_hi = physical_bounds(other)
    inter = np.clip(np.minimum(ref_hi, oth_hi) - np.maximum(ref_lo, oth_lo), 0, None)
    return inter / np.maximum(ref_hi - ref_lo, 1e-12)


def overlap_fraction(reference: sitk.Image, other: sitk.Image) -> float:
    """Fraction of the reference's bounding box that the other image's bounding box covers."""
    return float(np.prod(overlap_by_axis(reference, other)))


def resample_onto(image: sitk.Image, reference: sitk.Image, default: float,
                  interpolator: int = sitk.sitkLinear, pixel_type: int = sitk.sitkFloat32) -> sitk.Image:
    """Resample ``image`` onto the grid of ``reference``."""
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, default, pixel_type)


def inplane_grid(image: sitk.Image, spacing_xy: tuple[float, float]) -> sitk.Image:
    """An empty image covering the same physical extent with in-plane spacing ``spacing_xy`` (z kept)."""
    old_spacing = np.array(image.GetSpacing())
    new_spacing = np.array([spacing_xy[0], spacing_xy[1], old_spacing[2]])
    old_size = np.array(image.GetSize())
    new_size = np.maximum(np.round(old_size * old_spacing / new_spacing), 1).astype(int)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    # Keep the outer edge of the first voxel where it was.
    shift = direction @ ((new_spacing - old_spacing) / 2.0)
    grid = sitk.Image([int(s) for s in new_size], sitk.sitkUInt8)
    grid.SetSpacing([float(s) for s in new_spacing])
    grid.SetOrigin([float(o) for o in np.array(image.GetOrigin()) + shift])
    grid.SetDirection(image.GetDirection())
    return grid


def needs_inplane_resampling(image: sitk.Image, spacing_xy: tuple[float, float],
                             tolerance: float = SPACING_TOLERANCE) -> bool:
    """True when the in-plane spacing is more than ``tolerance`` (relative) away from ``spacing_xy``."""
    current = np.array(image.GetSpacing()[:2])
    target = np.array(spacing_xy)
    return bool(np.any(np.abs(current - target) > tolerance * target))


def orientation_of(image: sitk.Image) -> str:
    """The image's orientation code as SimpleITK's DICOMOrient names it (identity direction: "LPS"); for an
    oblique direction, the code of the nearest axes."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def reorient(image: sitk.Image, orientation: str) -> sitk.Image:
    """``image`` with its voxels permuted and flipped so that its axes run as ``orientation`` says; no
    interpolation, every voxel stays at its physical point (spacing, origin and direction follow). Itself when
    it is oriented so already (no copy). An oblique image is brought to the nearest such arrangement: its axes
    stay oblique, as tilted as before."""
    if orientation_of(image) == orientation:
        return image
    return sitk.DICOMOrient(image, orientation)


def restore_orientation(image: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """``image``, on the grid of ``reorient(reference, ...)``, brought back onto exactly ``reference``'s grid:
    the voxels permuted and flipped back, and size, spacing, origin and direction copied bit for bit (the
    reorientation's arithmetic may move the origin by rounding). ``image`` itself is left as it is."""
    back = reorient(image, orientation_of(reference))
    if not same_grid(back, reference):
        raise ValueError(f"an image oriented {orientation_of(image)} on size {image.GetSize()} does not map back "
                         f"onto the {orientation_of(reference)} grid of size {reference.GetSize()}")
    if back is image:
        back = sitk.Image(image)  # a copy, so that the caller's image keeps its own geometry
    back.CopyInformation(reference)
    return back
