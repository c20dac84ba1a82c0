"""Plausibility checks on both sides: real-looking phantoms pass (hot bladders and brains included), a PET in
Bq/ml, two different studies and implausible voxel sizes are refused with one line."""

import numpy as np
import pytest
import SimpleITK as sitk

from model import InputError
from model.checks import MAX_BODY_MEDIAN_SUV, MIN_OUTLINE_DICE, check_spacing, check_study
from phantoms import PhantomSpec, make_phantom
from tests.conftest import SMALL_SPEC

MEDIUM_SPEC = PhantomSpec(size=96, spacing=5.0, slices=60, slice_thickness=16.0)


@pytest.fixture(scope="module")
def studies():
    """(PET, CT) of six small and three medium phantoms, positive and negative."""
    small = [make_phantom(seed, positive=seed % 2 == 0, spec=SMALL_SPEC).images()[:2] for seed in range(6)]
    medium = [make_phantom(seed, positive=seed != 1, spec=MEDIUM_SPEC).images()[:2] for seed in range(3)]
    return small + medium


def _moved(image: sitk.Image, dx_mm: float) -> sitk.Image:
    moved = sitk.Image(image)
    origin = list(image.GetOrigin())
    origin[0] += dx_mm
    moved.SetOrigin(origin)
    return moved


def test_real_looking_studies_pass(studies):
    for pet, ct in studies:
        check_study(pet, ct, "pet.mha", "ct.mha")


def test_hot_bladders_and_brains_pass(studies):
    pet, ct = studies[0]
    array = sitk.GetArrayFromImage(pet)
    hot = array > np.percentile(array[array > 0], 99.5)
    array[hot] = 80.0  # a bladder at SUV 80
    array[(array > 4) & ~hot] *= 3  # brains and hearts at SUV 15 to 30
    hotter = sitk.GetImageFromArray(array)
    hotter.CopyInformation(pet)
    check_study(hotter, ct, "pet.mha", "ct.mha")


def test_a_ct_shorter_than_the_pet_or_on_its_own_grid_passes(studies):
    pet, ct = studies[6]
    check_study(pet, ct[:, :, ct.GetSize()[2] // 2 :], "pet.mha", "ct.mha")
    finer = sitk.Resample(ct, [2 * s for s in ct.GetSize()], sitk.Transform(), sitk.sitkLinear, ct.GetOrigin(),
                          [s / 2 for s in ct.GetSpacing()], ct.GetDirection(), -1024.0, ct.GetPixelID())
    check_study(pet, finer, "pet.mha", "ct.mha")


def test_ct_padding_outside_its_field_of_view_is_no_disagreement(studies):
    pet, ct = studies[7]
    array = sitk.GetArrayFromImage(ct)
    _, ny, nx = array.shape
    yy, xx = np.mgrid[:ny, :nx]
    outside = (yy - ny / 2) ** 2 + (xx - nx / 2) ** 2 > (0.35 * nx) ** 2  # a reconstruction circle cutting the arms
    array[:, outside] = -3024
    padded = sitk.GetImageFromArray(array)
    padded.CopyInformation(ct)
    check_study(pet, padded, "pet.mha", "ct.mha")


def test_a_pet_in_bq_per_ml_is_refused(studies):
    pet, ct = studies[0]
    with pytest.raises(InputError, match=r"pet\.mha: PET is not in SUV \(its median in the body is \d+") as caught:
        check_study(sitk.Cast(pet, sitk.sitkFloat32) * 5000.0, ct, "pet.mha", "ct.mha")
    assert "\n" not in str(caught.value)
    assert MAX_BODY_MEDIAN_SUV < 5000 * 0.3  # fat alone would read 1500 in Bq/ml


def test_pet_and_ct_of_two_different_studies_are_refused(studies):
    for (pet, _), (_, ct) in [(studies[0], studies[1]), (studies[2], studies[5]), (studies[6], studies[8])]:
        with pytest.raises(InputError, match="look like two different studies"):
            check_study(pet, _moved(ct, 150.0), "pet.mha", "ct.mha")


def test_a_pet_without_activity_in_the_cts_body_is_refused(studies):
    pet, ct = studies[0]
    with pytest.raises(InputError, match="no activity"):
        check_study(pet * 0.0, ct, "pet.mha", "ct.mha")
    air = sitk.Image(ct.GetSize(), sitk.sitkInt16) - 1000
    air.CopyInformation(ct)
    with pytest.raises(InputError, match="CT shows no body"):
        check_study(pet, air, "pet.mha", "ct.mha")


def test_the_body_is_the_checkpoints_body(studies):
    pet, ct = studies[0]
    check_study(pet, ct, "pet.mha", "ct.mha", body_threshold_hu=-500.0)
    # A model whose body starts above every CT value sees no body in this CT: refused by that model's rule.
    top = float(sitk.GetArrayViewFromImage(ct).max())
    with pytest.raises(InputError, match=f"nothing above {top:g} HU"):
        check_study(pet, ct, "pet.mha", "ct.mha", body_threshold_hu=top)


def test_the_outline_cut_is_below_every_same_study_pair(studies):
    # The margin the thresholds keep: each real-looking pair passes with the cut raised by 0.1.
    import model.checks

    original = model.checks.MIN_OUTLINE_DICE
    try:
        model.checks.MIN_OUTLINE_DICE = MIN_OUTLINE_DICE + 0.1
        for pet, ct in studies:
            check_study(pet, ct, "pet.mha", "ct.mha")
    finally:
        model.checks.MIN_OUTLINE_DICE = original


@pytest.mark.parametrize("spacing", [(50.0, 50.0, 3.0), (1e7, 1e7, 1e7), (0.05, 0.05, 2.0), (2.0, 2.0, 0.01),
                                     (2.0, 2.0, 80.0)])
def test_implausible_spacings_are_refused(spacing):
    image = sitk.Image([8, 8, 8], sitk.sitkFloat32)
    image.SetSpacing(spacing)
    with pytest.raises(InputError, match=r"voxel spacing .* is implausible"):
        check_spacing(image, "x.mha", "PET")


@pytest.mark.parametrize("spacing", [(0.68, 0.68, 0.6), (2.0364, 2.0364, 3.0), (4.0, 4.0, 5.0), (8.0, 8.0, 24.0)])
def test_plausible_spacings_pass(spacing):
    image = sitk.Image([8, 8, 8], sitk.sitkFloat32)
    image.SetSpacing(spacing)
    check_spacing(image, "x.mha", "PET")


@pytest.mark.parametrize("bad", [np.inf, np.nan])
@pytest.mark.parametrize("role", ["PET", "CT"])
def test_non_finite_voxels_are_refused(studies, bad, role):
    pet, ct = (sitk.Cast(image, sitk.sitkFloat32) for image in studies[0])
    target = pet if role == "PET" else ct
    target[3, 4, 5] = bad
    with pytest.raises(InputError, match=rf"{role.lower()}\.mha: {role} holds 1 voxel\(s\) that are NaN or infinite"):
        check_study(pet, ct, "pet.mha", "ct.mha")


def test_a_field_of_view_where_the_couch_is_as_large_as_the_body_passes():
    """24 slices of the thighs on a wide couch (the benchmark's study): the couch is half of what the CT calls
    body, so a median over both was 0 and the study was refused as "two different studies"."""
    pet, ct, _ = make_phantom(1, spec=PhantomSpec(size=256, slices=24)).images()
    check_study(pet, ct)
