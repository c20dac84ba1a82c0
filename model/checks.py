"""Plausibility of a study before any inference: what clearly is not a PET in SUV with its own CT is refused.

The thresholds are loose on purpose: they refuse what no real study looks like (a PET in Bq/ml, whose
body reads thousands; a PET and a CT of two different patients; voxels of 50 mm), never an unusual
patient (bladders reach SUV 60 and more, brains 15, but the body's median stays near 1).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from model.config import NormalisationConfig
from model.errors import InputError, shown
from model.geometry import CT_FILL_HU

# Voxel sizes of whole-body PET and CT lie between about 0.6 mm (CT in-plane) and 5 mm (PET slices). In-plane
# spacing sets the cost (inputs are resampled in-plane to the model's ~2 mm: 50 mm voxels make a grid 600
# times larger); slices are not resampled, so their limit is looser (and the tests' small phantoms use 24 mm).
PLAUSIBLE_INPLANE_MM = (0.4, 20.0)
PLAUSIBLE_SLICE_MM = (0.4, 50.0)
# CT above this is body where the caller gives no threshold: the default of NormalisationConfig. A run passes
# its checkpoint's own (``check_study(..., body_threshold_hu=config.normalisation.body_threshold_hu)``).
DEFAULT_BODY_HU = NormalisationConfig().body_threshold_hu
# CT below this is padding, not air (about -1000 HU).
CT_PADDING_BELOW_HU = -1100.0
# The median SUV over the body is about 0.4 to 1.5 (fat 0.3, muscle 0.7, liver 2); no body reaches 30, while a
# PET in Bq/ml reads about 5000 per SUV. (kBq/ml, about 5 per SUV, cannot be told from SUV this way.)
MAX_BODY_MEDIAN_SUV = 30.0
# The PET's body: voxels above this fraction of the PET's median over the CT's body (fat sits at ~0.4 of it).
PET_BODY_FRACTION = 0.2
# A connected part of the CT's body with less of the PET's body than this share is an object (the couch).
MIN_ACTIVE_SHARE = 0.1
# PET above this (SUV) is activity, for telling the couch from the body before the body's median is known:
# fat, the least active tissue, is about 0.3; air and the couch about 0.
MIN_ACTIVITY_SUV = 0.1
# Same-study pairs of the phantoms' studies (phantoms/) (couch, raised arms, breathing misregistration) agree at 0.875
# to 1.0 (48 studies, 8 and 4 mm grids); PET of one and CT of another agree at 0.53 to 0.96 (median 0.8), a
# CT 100 mm to the side at most 0.68. The cut refuses gross disagreement only: two patients of similar build
# lying alike pass.
MIN_OUTLINE_DICE = 0.7
# The comparison runs on a grid of about this spacing (mm): outlines need no finer, and it stays fast.
CHECK_SPACING_MM = 6.0


def check_spacing(image: sitk.Image, name: str, role: str) -> None:
    """Refuse voxel sizes outside PLAUSIBLE_INPLANE_MM (x, y) and PLAUSIBLE_SLICE_MM (z): 50 mm voxels run
    70 times longer than normal, and 1e7 mm ones cannot be resampled at all."""
    spacing = image.GetSpacing()
    for axes, (low, high) in (("xy", PLAUSIBLE_INPLANE_MM), ("z", PLAUSIBLE_SLICE_MM)):
        values = [spacing["xyz".index(axis)] for axis in axes]
        if not all(np.isfinite(v) and low <= v <= high for v in values):
            raise InputError(f"{shown(name)}: {role} voxel spacing {tuple(round(s, 4) for s in spacing)} mm is "
                             f"implausible for a whole-body study ({axes} must lie in {low:g} to {high:g} mm)")


def check_finite(image: sitk.Image, name: str, role: str) -> None:
    """Refuse NaN or infinite voxels (a float image, or a NIfTI scaled by an infinite scl_slope): they would
    reach the normalisation, SUVpeak and the reports as NaN or infinity. Checked in chunks of slices, so
    that no whole-volume temporary is made."""
    if image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        return  # integer voxels are finite
    values = sitk.GetArrayViewFromImage(image)
    bad = sum(int(np.count_nonzero(~np.isfinite(values[z:z + 32]))) for z in range(0, values.shape[0], 32))
    if bad:
        raise InputError(f"{shown(name)}: {role} holds {bad} voxel(s) that are NaN or infinite")


IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)  # 4-connected neighbours within a slice


def _filled(body: np.ndarray) -> np.ndarray:
    """Holes filled slice by slice (lungs, bowel gas): the outline is compared, not the inside. What is not
    body and does not reach the slice's border is a hole (a labelling: 10x faster than binary_fill_holes)."""
    labels, _ = ndimage.label(~body, IN_PLANE)
    border = np.unique(np.concatenate([labels[:, 0].ravel(), labels[:, -1].ravel(),
                                       labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]))
    outside = np.zeros(labels.max() + 1, dtype=bool)
    outside[border] = True
    outside[0] = False  # label 0 is the body itself
    return ~outside[labels]


def _grown(mask: np.ndarray) -> np.ndarray:
    """``mask`` grown by one voxel in-plane (3x3)."""
    return ndimage.maximum_filter(mask.view(np.uint8), size=(1, 3, 3)).view(bool)


def _without_objects(ct_body: np.ndarray, pet_body: np.ndarray) -> np.ndarray:
    """The CT's body without what holds no activity: the couch (and anything else beside the patient) shows
    in the CT only. Parts of the CT's body that are mostly outside the PET's body are dropped whole."""
    labels, count = ndimage.label(ct_body, IN_PLANE)  # per slice: the couch may touch the body somewhere
    if count == 0:
        return ct_body
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    active = np.bincount(labels.ravel(), weights=pet_body.ravel(), minlength=count + 1)
    keep = active >= MIN_ACTIVE_SHARE * sizes
    keep[0] = False
    return keep[labels]


# SUV is never far below 0 (reconstructions give small negatives); a CT's air is -1000 HU.
MIN_PLAUSIBLE_SUV = -100.0


def check_not_swapped(pet: np.ndarray, ct: np.ndarray, pet_name: str, ct_name: str) -> None:
    """Refuse a PET that holds HU: a CT, most often the two files given the wrong way round."""
    pet_low = float(np.percentile(pet, 1))
    if pet_low >= MIN_PLAUSIBLE_SUV:
        return
    ct_low = float(np.percentile(ct, 1))
    if ct_low >= MIN_PLAUSIBLE_SUV:
        raise InputError(f"{shown(pet_name)}: PET and CT {shown(ct_name)} look swapped: the PET holds values like a "
                         f"CT in HU (1st percentile {pet_low:.4g}) and the CT like a PET in SUV (1st percentile "
                         f"{ct_low:.4g}); give them the other way round")
    raise InputError(f"{shown(pet_name)}: PET holds values like a CT in HU (1st percentile {pet_low:.4g}; SUV is "
                     "never far below 0): is it the CT?")


def check_suv_units(pet: np.ndarray, ct_body: np.ndarray, name: str) -> float:
    """Refuse a PET whose median over the body cannot be SUV (Bq/ml reads about 5000 times more); returns
    that median."""
    if not ct_body.any():
        return float("nan")
    median = float(np.median(pet[ct_body]))
    if not median <= MAX_BODY_MEDIAN_SUV:
        raise InputError(f"{shown(name)}: PET is not in SUV (its median in the body is {median:.4g}; SUV there "
                         f"is about 0.5 to 1.5 and below {MAX_BODY_MEDIAN_SUV:g} in any study): Bq/ml or counts "
                         "must be converted to SUV (body weight)")
    return median


def outline_dice(pet: np.ndarray, ct: np.ndarray, covered: np.ndarray, body_median_suv: float,
                 body_threshold_hu: float = DEFAULT_BODY_HU) -> float:
    """Agreement of the PET's and the CT's body outlines where the CT has data: a Dice in which a voxel of one
    outline counts as matched when the other is within one voxel in-plane (PET blur, partial volume and
    breathing move an outline by that much within one study). The CT's body: above ``body_threshold_hu``."""
    if not body_median_suv > 0:
        return 0.0  # no activity in most of what the CT shows as body: not this CT's PET
    pet_body = _filled(pet > PET_BODY_FRACTION * body_median_suv) & covered
    ct_body = _filled(_without_objects((ct > body_threshold_hu) & covered, pet_body))
    total = np.count_nonzero(pet_body) + np.count_nonzero(ct_body)
    if total == 0:
        return 1.0
    matched = np.count_nonzero(pet_body & _grown(ct_body)) + np.count_nonzero(ct_body & _grown(pet_body))
    return matched / total


def check_same_study(pet: np.ndarray, ct: np.ndarray, covered: np.ndarray, body_median_suv: float,
                     pet_name: str, ct_name: str, body_threshold_hu: float = DEFAULT_BODY_HU) -> float:
    """Refuse a PET and a CT whose body outlines disagree grossly (two different studies); returns the Dice."""
    if not body_median_suv > 0:
        raise InputError(f"{shown(pet_name)}: PET and CT {shown(ct_name)} look like two different studies (the PET "
                         "shows no activity in most of the CT's body, or none at all)")
    dice = outline_dice(pet, ct, covered, body_median_suv, body_threshold_hu)
    if dice < MIN_OUTLINE_DICE:
        raise InputError(f"{shown(pet_name)}: PET and CT {shown(ct_name)} look like two different studies (their "
                         f"body outlines agree at Dice {dice:.2f}; a PET and its own CT agree at 0.9 and more)")
    return dice


def _box_of(image: sitk.Image) -> sitk.Image:
    """One voxel that covers exactly the physical box of ``image`` (nearest-neighbour resampling of it
    tells where ``image`` has data, without touching its voxels)."""
    size = np.array(image.GetSize(), dtype=float)
    box = sitk.Image([1, 1, 1], sitk.sitkUInt8) + 1
    box.SetSpacing([float(s) for s in size * np.array(image.GetSpacing())])
    box.SetDirection(image.GetDirection())
    box.SetOrigin(image.TransformContinuousIndexToPhysicalPoint([float(c) for c in (size - 1) / 2]))
    return box


def _coarse(pet: sitk.Image, ct: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The PET subsampled to about CHECK_SPACING_MM, the CT resampled onto that grid, and where the CT has
    data (a CT shorter than the PET is no disagreement)."""
    steps = [max(1, round(CHECK_SPACING_MM / s)) for s in pet.GetSpacing()]
    small = pet[:: steps[0], :: steps[1], :: steps[2]]
    ct_small = sitk.GetArrayFromImage(
        sitk.Resample(ct, small, sitk.Transform(), sitk.sitkLinear, CT_FILL_HU, sitk.sitkFloat32))
    covered = sitk.Resample(_box_of(ct), small, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    # Far below air is no data either: scanners pad outside the CT's reconstruction circle with -2048 or -3024.
    covered = sitk.GetArrayViewFromImage(covered).astype(bool) & (ct_small > CT_PADDING_BELOW_HU)
    return sitk.GetArrayFromImage(small).astype(np.float32), ct_small, covered


def check_study(pet: sitk.Image, ct: sitk.Image, pet_name: str = "PET", ct_name: str = "CT", *,
                body_threshold_hu: float = DEFAULT_BODY_HU) -> None:
    """Every plausibility check of one study (SimpleITK images as read; the CT on any grid that overlaps
    the PET): finite voxels, voxel spacings, SUV units, one study. InputError names the file and the problem.
    ``body_threshold_hu``: CT above it is body, as the model that will segment the study has it (its
    checkpoint's NormalisationConfig.body_threshold_hu)."""
    check_finite(pet, pet_name, "PET")
    check_finite(ct, ct_name, "CT")
    check_spacing(pet, pet_name, "PET")
    check_spacing(ct, ct_name, "CT")
    pet_small, ct_small, covered = _coarse(pet, ct)
    if not covered.any():
        return  # no common extent: model.inference.segment reports the missing overlap
    check_not_swapped(pet_small, ct_small[covered], pet_name, ct_name)
    ct_body = (ct_small > body_threshold_hu) & covered
    if not ct_body.any():
        raise InputError(f"{shown(ct_name)}: CT shows no body (nothing above {body_threshold_hu:g} HU) where it "
                         f"covers the PET {shown(pet_name)}")
    # The couch is body to the CT and nothing to the PET: where it is as large as the body (a field of view of
    # the legs) a median over both is 0. Parts of the CT's body without activity are left out of the median;
    # a PET without activity anywhere in the CT's body keeps them all (and is refused below).
    active_body = _without_objects(ct_body, pet_small > MIN_ACTIVITY_SUV)
    median = check_suv_units(pet_small, active_body if active_body.any() else ct_body, pet_name)
    check_same_study(pet_small, ct_small, covered, median, pet_name, ct_name, body_threshold_hu)
