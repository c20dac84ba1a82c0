"""The whole inference path against the oracle network: the right mask is SUV > 3 wherever there is body."""

import numpy as np
import pytest
import SimpleITK as sitk

from model import segment
from model.config import ModelConfig
from model.geometry import (
    DIRECTION_TOLERANCE,
    inplane_grid,
    orientation_of,
    orthonormality_error,
    overlap_fraction,
    physical_bounds,
    reorient,
    resample_onto,
    restore_orientation,
)
from tests.conftest import ORACLE_SUV, TINY, dice, oracle_predictor


def _study(size=(37, 41, 13), spacing=(8.0, 8.0, 20.0), direction=None, seed=0):
    """A box-shaped body with hot spheres; (PET, CT, expected mask) on one grid."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = size
    ct = np.full((nz, ny, nx), -1000, np.int16)
    ct[:, 4 : ny - 4, 3 : nx - 3] = 40
    pet = np.where(ct > -500, 1.0, 0.0).astype(np.float32)
    for _ in range(4):
        z, y, x = rng.integers(1, nz - 1), rng.integers(6, ny - 6), rng.integers(5, nx - 5)
        pet[max(z - 1, 0) : z + 2, y - 2 : y + 3, x - 2 : x + 3] = rng.uniform(5, 15)
    images = []
    for array in (pet, ct):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
        image.SetOrigin((-100.0, 37.5, 12.25))
        if direction is not None:
            image.SetDirection(direction)
        images.append(image)
    return images[0], images[1], (pet > ORACLE_SUV).astype(np.uint8)


ROTATED = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def test_mask_geometry_is_the_pets_with_odd_sizes_and_a_rotated_direction():
    pet, ct, expected = _study(direction=ROTATED)
    mask = segment(pet, ct, oracle_predictor())
    assert mask.GetSize() == pet.GetSize() and mask.GetSpacing() == pet.GetSpacing()
    assert mask.GetOrigin() == pet.GetOrigin() and mask.GetDirection() == pet.GetDirection()
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert np.array_equal(sitk.GetArrayFromImage(mask), expected)


def test_crop_and_paste_back_are_inverse_on_a_large_matrix():
    pet, ct, expected = _study(size=(150, 120, 6))
    assert np.array_equal(sitk.GetArrayFromImage(segment(pet, ct, oracle_predictor())), expected)


def test_tiles_cover_a_body_wider_than_the_crop():
    pet, ct, expected = _study(size=(200, 50, 5), seed=1)  # body 194 px wide, crop 64
    assert expected[:, :, :20].any() or expected[:, :, -20:].any() or expected.any()
    assert np.array_equal(sitk.GetArrayFromImage(segment(pet, ct, oracle_predictor())), expected)


def test_ct_on_another_grid_is_resampled_onto_the_pet():
    pet, ct, expected = _study(size=(40, 40, 10))
    # The same CT content on a finer, shifted grid that still covers the PET.
    fine = sitk.Image([84, 84, 22], sitk.sitkUInt8)
    fine.SetSpacing((4.0, 4.0, 10.0))
    fine.SetOrigin(tuple(np.array(pet.GetOrigin()) - (6.0, 6.0, 10.0)))
    ct_fine = resample_onto(ct, fine, -1024.0, sitk.sitkNearestNeighbor)
    mask = segment(pet, ct_fine, oracle_predictor())
    assert np.array_equal(sitk.GetArrayFromImage(mask), expected)


def test_inplane_spacing_far_from_the_models_is_resampled_and_brought_back():
    config = ModelConfig.from_dict({**TINY.to_dict(), "spacing_mm": (5.0, 5.0)})
    pet, ct, expected = _study(size=(60, 60, 8))  # 8 mm input, model at 5 mm
    mask = sitk.GetArrayFromImage(segment(pet, ct, oracle_predictor(config)))
    assert mask.shape == expected.shape and dice(mask, expected) > 0.9


def test_inplane_grid_keeps_the_physical_extent():
    pet, _, _ = _study(direction=ROTATED)
    lo, hi = physical_bounds(pet)
    lo2, hi2 = physical_bounds(inplane_grid(pet, (3.0, 3.0)))
    assert np.allclose(lo, lo2, atol=3.0) and np.allclose(hi, hi2, atol=3.0)


def test_overlap_fraction():
    pet, ct, _ = _study()
    assert overlap_fraction(pet, ct) == 1.0
    ct.SetOrigin((5000.0, 0.0, 0.0))
    assert overlap_fraction(pet, ct) == 0.0


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))  # a proper orthonormal matrix, possibly a reflection: both occur in files


@pytest.mark.parametrize("seed", range(6))
def test_reorient_moves_no_voxel_and_restore_orientation_is_its_exact_inverse(seed):
    """Any direction, oblique ones included: the voxels are permuted and flipped, each keeps its physical point,
    and the way back gives the original array on bit for bit the original geometry."""
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.random((5, 6, 7)).astype(np.float32))
    image.SetSpacing((1.5, 2.5, 4.0))
    image.SetOrigin(tuple(rng.normal(0, 100, 3)))
    image.SetDirection(_random_rotation(rng).ravel().tolist())
    for code in ("LPS", "RAS", "SLP", "AIR"):
        turned = reorient(image, code)
        assert orientation_of(turned) == code
        for index in [(0, 0, 0), (3, 1, 4)]:
            point = image.TransformIndexToPhysicalPoint(index)
            assert turned.GetPixel(turned.TransformPhysicalPointToIndex(point)) == image.GetPixel(index)
        back = restore_orientation(turned, image)
        assert np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image))
        assert (back.GetSize(), back.GetSpacing(), back.GetOrigin(), back.GetDirection()) == (
            image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())


def test_reorient_to_the_images_own_orientation_is_the_image_and_restore_leaves_its_argument_alone():
    pet, _, _ = _study()
    assert orientation_of(pet) == "LPS" and reorient(pet, "LPS") is pet
    moved = sitk.Image(pet)
    shifted = tuple(np.array(pet.GetOrigin()) + (1.0e-4, 0.0, 0.0))
    moved.SetOrigin(shifted)  # within same_grid's tolerance, as reorient's rounding may leave it
    back = restore_orientation(moved, pet)
    assert back.GetOrigin() == pet.GetOrigin() and moved.GetOrigin() == shifted


def test_restore_orientation_refuses_an_image_of_another_grid():
    pet, _, _ = _study()
    with pytest.raises(ValueError, match="does not map back"):
        restore_orientation(pet[1:], pet)


@pytest.mark.parametrize("seed", range(4))
def test_orthonormality_error_is_rounding_for_rotations_and_flips_and_large_for_anything_else(seed):
    rotation = _random_rotation(np.random.default_rng(seed))
    assert orthonormality_error(tuple(rotation.ravel())) < 1e-12
    assert orthonormality_error(rotation[:, :2]) < 1e-12  # a DICOM orientation's row and column cosines
    for other in (rotation @ (np.eye(3) + 0.3 * np.eye(3, k=1)), 2 * rotation, rotation @ np.diag([1, 1, 0.01]),
                  rotation @ np.diag([1, 1.002, 1])):
        assert orthonormality_error(tuple(other.ravel())) > DIRECTION_TOLERANCE
    assert orthonormality_error((np.nan, 0, 0, 0, 1, 0, 0, 0, 1)) == np.inf
    # Six decimals, as DICOM orientations are often written, are far inside the tolerance.
    assert orthonormality_error(np.round(rotation, 6)) < DIRECTION_TOLERANCE / 100
