"""Plausibility of a study before any inference: what clearly is not a PET in SUV with its own CT is refused.

The thresholds are loose on purpose: they refuse what no real study looks like (a PET in Bq/ml, whose
body reads thousands, or in MBq/ml, whose body reads thousandths; a PET and a CT of two different patients;
voxels of 50 mm; a direction matrix that is no rotation), never an unusual patient (bladders reach SUV 60 and
more, brains 15, but the body's median stays near 1). Non-finite voxels outside the body (a converter's
padding beyond the reconstructed field of view) are no data: they are filled, with a warning.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from model.errors import InputError, shown
from model.geometry import CT_FILL_HU, DIRECTION_TOLERANCE, orthonormality_error
from model.preprocessing import NormalisationConfig
from model.validation import PLAUSIBLE_WEIGHT_KG
from studies.suv import SuvConversion

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
# The FDG PET's median SUV over the CT's body (the couch left out) is about 0.3 to 3: fat, the least active
# tissue, reads 0.2 to 0.4 and the body's median stays above it (an obese body is mostly fat), muscle 0.7,
# liver 2; the phantoms read 0.45 to 5.2 (40 studies of 5 sizes) and the shipped test case 0.55. Nothing real is
# below a third of fat or above 10 times the liver. Outside: a PET in Bq/ml (about 5000 per SUV: 1500 and
# more), in MBq/ml (about 0.005 per SUV: 0.002 and less), normalised to 0..1 (its median over its maximum: 0.008
# to 0.08 for whole-body phantoms, 0.03 for the test case; a field of view without a hot organ passes), or SUV
# from a body weight off tenfold or more. (kBq/ml, about 5 per SUV, cannot be told from SUV this way.)
BODY_MEDIAN_SUV = (0.1, 30.0)
# The PET's body: voxels above this fraction of the PET's median over the CT's body (fat sits at ~0.4 of it).
PET_BODY_FRACTION = 0.2
# A connected part of the CT's body with less of the PET's body than this share is an object (the couch).
MIN_ACTIVE_SHARE = 0.1
# PET above this fraction of its 90th percentile over the CT's body is activity, for telling the couch from the
# body before the body's median is known: fat, the least active tissue, is about a fifth of that percentile; air
# and the couch about 0. (A fraction, not an SUV: a PET a thousand times off the SUV scale must keep the same
# parts, so that the median tells its scale.)
MIN_ACTIVITY_FRACTION = 0.05
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


def check_direction(direction: tuple[float, ...], name: str, role: str) -> None:
    """Refuse a direction matrix that is not a rotation (with a flip) within DIRECTION_TOLERANCE: a shear, a
    scale or a nearly singular matrix makes physical distances (Dmax, the resampling) disagree with volumes
    taken from the spacing (TMTV)."""
    error = orthonormality_error(direction)
    if not error <= DIRECTION_TOLERANCE:
        shown_matrix = [float(f"{v:.4g}") for v in direction]
        raise InputError(f"{shown(name)}: {role} direction matrix {shown_matrix} is not orthonormal (D^T D differs "
                         f"from the identity by {error:.3g}, more than {DIRECTION_TOLERANCE:g}): a shear, a scale or "
                         "a singular matrix is no patient orientation")


def check_body_weight(suv: SuvConversion | None, name: str) -> None:
    """Refuse a PET whose SUV was computed with a body weight outside PLAUSIBLE_WEIGHT_KG."""
    if suv is None or suv.weight_kg is None:
        return
    low, high = PLAUSIBLE_WEIGHT_KG
    if not (np.isfinite(suv.weight_kg) and low <= suv.weight_kg <= high):
        hint = "; give the weight in kg with --weight-kg" if suv.weight_source != "--weight-kg" else ""
        raise InputError(f"{shown(name)}: body weight {suv.weight_kg:g} kg ({suv.weight_source}) is not a patient's "
                         f"({low:g} to {high:g} kg): SUV would be off by the same factor{hint}")


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
    active = np.bincount(labels[pet_body], minlength=count + 1)  # integer counts: no float64 weights pass
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


# Below this median over the body a PET looks like MBq/ml (SUV 1 is about 0.005 MBq/ml: a median of 0.0015 to
# 0.015); a PET whose highest value is 1 (to 1 %) looks normalised to 0..1 (its median 0.008 to 0.08).
MBQ_PER_ML_BELOW = 0.02


def _low_scale_guess(median: float, highest: float | None) -> str:
    """What a PET whose median over the body is below the SUV scale looks like, from that median and its highest
    value (None: not known)."""
    if highest is not None and abs(highest - 1.0) <= 0.01:
        return "the values look normalised to 0..1 (the highest is 1)"
    if median < MBQ_PER_ML_BELOW:
        return "the values look like MBq/ml (SUV 1 is about 0.005 MBq/ml)"
    return "the values look like SUV from a body weight or dose off by a large factor"


def check_suv_units(pet: np.ndarray, ct_body: np.ndarray, name: str, suv: SuvConversion | None = None,
                    highest: Callable[[], float] | None = None) -> float:
    """Refuse a PET whose median over the body cannot be SUV (BODY_MEDIAN_SUV: Bq/ml reads about 5000 times
    more, MBq/ml about 200 times less); returns that median. ``suv``: how a DICOM PET's SUV was computed,
    ``highest``: gives the PET's highest value (a pass over the whole PET: asked only for a refusal); both help
    the refusal say what the values look like."""
    if not ct_body.any():
        return float("nan")
    median = float(np.median(pet[ct_body]))
    low, high = BODY_MEDIAN_SUV
    if low <= median <= high or median <= 0:  # no activity at all: check_same_study says so
        return median
    if median > high:
        looks = "Bq/ml or counts must be converted to SUV (body weight)"
    else:
        guess = _low_scale_guess(median, highest() if highest is not None else None)
        looks = (f"{guess} (MBq/ml, values normalised to 0..1 and SUV from a wrong body "
                 "weight or dose read below the scale)")
    if suv is not None:
        looks += (f" (its SUV factor {suv.factor:.4g} from Units {suv.units}"
                  f"{f', {suv.weight_source} {suv.weight_kg:g} kg' if suv.weight_kg is not None else ''})")
    raise InputError(f"{shown(name)}: PET is not in SUV (its median in the body is {median:.4g}; SUV there is about "
                     f"0.3 to 3 and from {low:g} to {high:g} in any study): {looks}")


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


def _coarse_steps(image: sitk.Image) -> list[int]:
    """The subsampling of ``image`` (x, y, z) to about CHECK_SPACING_MM."""
    return [max(1, round(CHECK_SPACING_MM / s)) for s in image.GetSpacing()]


def _coarse(pet: sitk.Image, ct: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The PET subsampled to about CHECK_SPACING_MM, the CT resampled onto that grid, and where the CT has
    data (a CT shorter than the PET is no disagreement). Non-finite CT voxels are air there (no body)."""
    steps = _coarse_steps(pet)
    small = pet[:: steps[0], :: steps[1], :: steps[2]]
    # Resampled in float64: a float32 output would clamp an infinite voxel to 3.4e38 HU, a body.
    ct_small = sitk.GetArrayFromImage(
        sitk.Resample(ct, small, sitk.Transform(), sitk.sitkLinear, CT_FILL_HU, sitk.sitkFloat64)).astype(np.float32)
    ct_small[~np.isfinite(ct_small)] = CT_FILL_HU
    covered = sitk.Resample(_box_of(ct), small, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    # Far below air is no data either: scanners pad outside the CT's reconstruction circle with -2048 or -3024.
    covered = sitk.GetArrayViewFromImage(covered).astype(bool) & (ct_small > CT_PADDING_BELOW_HU)
    return sitk.GetArrayFromImage(small).astype(np.float32), ct_small, covered


# What a non-finite voxel outside the body becomes: no activity in a PET, air in a CT.
NONFINITE_FILL = {"PET": 0.0, "CT": CT_FILL_HU}
CHUNK_SLICES = 32  # non-finite voxels are counted and filled this many slices at a time (no whole-volume temporary)


def _outside_body(image: sitk.Image, ct: sitk.Image, body_threshold_hu: float) -> np.ndarray:
    """On ``image``'s coarse grid (``_coarse_steps``): where the CT's extent reaches and it shows no body within
    one coarse voxel (about 6 mm) in-plane, holes of the body (lungs, bowel gas) counted as body. The CT's
    padding beyond its reconstruction circle is no body here (it is the CT's extent, unlike the outline check's
    ``covered``)."""
    _, ct_small, covered = _coarse(image, ct)
    in_extent = covered | (ct_small <= CT_PADDING_BELOW_HU)  # outside its box the CT reads CT_FILL_HU, not padding
    body = _filled((ct_small > body_threshold_hu) & covered)
    return in_extent & ~_grown(body)


def fill_nonfinite_outside_body(image: sitk.Image, ct: sitk.Image, name: str, role: str,
                                body_threshold_hu: float = DEFAULT_BODY_HU) -> tuple[sitk.Image, str | None]:
    """``image`` (the PET or the CT) with its NaN or infinite voxels outside the CT's body set to
    NONFINITE_FILL[role], and the warning line that counts them (None when there were none: ``image`` itself).
    Some converters pad beyond the reconstructed field of view with NaN; a refusal would leave the case without
    a mask. A non-finite voxel inside the body, or where the CT does not reach, would reach the normalisation,
    SUVpeak and the reports: InputError, as every such voxel was before."""
    if image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        return image, None  # integer voxels are finite
    values = sitk.GetArrayViewFromImage(image)
    chunks = range(0, values.shape[0], CHUNK_SLICES)
    total = sum(int(np.count_nonzero(~np.isfinite(values[z:z + CHUNK_SLICES]))) for z in chunks)
    if total == 0:
        return image, None
    outside = _outside_body(image, ct, body_threshold_hu)
    steps = _coarse_steps(image)  # x, y, z; the arrays are z, y, x
    nearest = [np.minimum(np.round(np.arange(n) / step).astype(int), m - 1)
               for n, step, m in zip(values.shape, steps[::-1], outside.shape, strict=True)]
    inside = 0
    for z in chunks:
        bad = ~np.isfinite(values[z:z + CHUNK_SLICES])
        if bad.any():
            where = outside[np.ix_(nearest[0][z:z + CHUNK_SLICES], nearest[1], nearest[2])]
            inside += int(np.count_nonzero(bad & ~where))
    if inside:
        raise InputError(f"{shown(name)}: {role} holds {total} voxel(s) that are NaN or infinite, {inside} of them "
                         "inside the body or where the CT does not reach")
    filled = sitk.GetArrayFromImage(image)
    for z in chunks:
        block = filled[z:z + CHUNK_SLICES]
        block[~np.isfinite(block)] = NONFINITE_FILL[role]
    result = sitk.GetImageFromArray(filled)
    result.CopyInformation(image)
    return result, (f"{shown(name)}: {total} {role} voxel(s) NaN or infinite outside the body (padding beyond the "
                    f"field of view?) set to {NONFINITE_FILL[role]:g}")


def _highest(image: sitk.Image) -> float:
    extremes = sitk.MinimumMaximumImageFilter()
    extremes.Execute(image)
    return extremes.GetMaximum()


def check_study(pet: sitk.Image, ct: sitk.Image, pet_name: str = "PET", ct_name: str = "CT", *,
                body_threshold_hu: float = DEFAULT_BODY_HU,
                suv: SuvConversion | None = None) -> tuple[sitk.Image, sitk.Image, list[str]]:
    """Every plausibility check of one study (SimpleITK images as read; the CT on any grid that overlaps
    the PET): voxel spacings, directions, body weight, finite voxels, SUV units, one study. InputError names the
    file and the problem. Returns the PET and the CT to use (non-finite voxels outside the body filled:
    ``fill_nonfinite_outside_body``) and the warning lines. ``body_threshold_hu``: CT above it is body, as the
    model that will segment the study has it (its checkpoint's NormalisationConfig.body_threshold_hu). ``suv``:
    how a DICOM PET's SUV was computed (its body weight is checked)."""
    for image, name, role in ((pet, pet_name, "PET"), (ct, ct_name, "CT")):
        check_spacing(image, name, role)
        check_direction(image.GetDirection(), name, role)
    check_body_weight(suv, pet_name)
    pet, pet_note = fill_nonfinite_outside_body(pet, ct, pet_name, "PET", body_threshold_hu)
    ct, ct_note = fill_nonfinite_outside_body(ct, ct, ct_name, "CT", body_threshold_hu)
    notes = [note for note in (pet_note, ct_note) if note is not None]
    pet_small, ct_small, covered = _coarse(pet, ct)
    if not covered.any():
        return pet, ct, notes  # no common extent: model.inference.segment reports the missing overlap
    check_not_swapped(pet_small, ct_small[covered], pet_name, ct_name)
    ct_body = (ct_small > body_threshold_hu) & covered
    if not ct_body.any():
        raise InputError(f"{shown(ct_name)}: CT shows no body (nothing above {body_threshold_hu:g} HU) where it "
                         f"covers the PET {shown(pet_name)}")
    # The couch is body to the CT and nothing to the PET: where it is as large as the body (a field of view of
    # the legs) a median over both is 0. Parts of the CT's body without activity are left out of the median;
    # a PET without activity anywhere in the CT's body keeps them all (and is refused below).
    activity = MIN_ACTIVITY_FRACTION * float(np.percentile(pet_small[ct_body], 90))
    active_body = _without_objects(ct_body, pet_small > activity) if activity > 0 else ct_body
    median = check_suv_units(pet_small, active_body if active_body.any() else ct_body, pet_name, suv,
                             highest=partial(_highest, pet))
    check_same_study(pet_small, ct_small, covered, median, pet_name, ct_name, body_threshold_hu)
    return pet, ct, notes
