"""Plausibility checks on both sides: real-looking phantoms pass (hot bladders and brains included), a PET in
Bq/ml or MBq/ml, a body weight no patient has, directions that are no rotation, two different studies and
implausible voxel sizes are refused with one line; non-finite voxels outside the body are filled with a
warning, inside it refused."""

import numpy as np
import pytest
import SimpleITK as sitk

from model import InputError
from model.validation import PLAUSIBLE_WEIGHT_KG
from phantoms import PhantomSpec, make_phantom
from runner.pipeline import run_case
from studies.cases import path_case
from studies.checks import BODY_MEDIAN_SUV, MIN_OUTLINE_DICE, NONFINITE_FILL, check_spacing, check_study
from studies.suv import SuvConversion
from tests.conftest import SMALL_SPEC, oracle_predictor, write_case
from tests.studies.dicom_series import Grid, StudyIds, ct_datasets, pet_datasets, write_series

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
    assert BODY_MEDIAN_SUV[1] < 5000 * 0.3  # fat alone would read 1500 in Bq/ml


def _scaled(image: sitk.Image, factor: float) -> sitk.Image:
    return sitk.Cast(image, sitk.sitkFloat32) * factor


@pytest.mark.parametrize(("what", "looks"), [("MBq/ml", "like MBq/ml"), ("normalised to 0..1", "normalised to 0..1"),
                                             ("SUV with a weight 10 times too low", "like SUV from a body weight")])
def test_a_pet_far_below_the_suv_scale_is_refused(studies, what, looks):
    for pet, ct in (studies[0], studies[7]):
        peak = float(sitk.GetArrayViewFromImage(pet).max())
        factor = {"MBq/ml": 5e-3, "normalised to 0..1": 1 / peak, "SUV with a weight 10 times too low": 1 / 10}[what]
        with pytest.raises(InputError, match=r"pet\.mha: PET is not in SUV \(its median in the body is 0\.0\d*; .*"
                                             rf"the values look {looks}") as caught:
            check_study(_scaled(pet, factor), ct, "pet.mha", "ct.mha")
        assert "\n" not in str(caught.value)


def test_the_suv_scale_bounds_keep_a_margin_around_every_real_looking_study(studies):
    # Each real-looking study passes with the low bound raised threefold and the high one lowered threefold.
    from studies import checks

    original = checks.BODY_MEDIAN_SUV
    try:
        checks.BODY_MEDIAN_SUV = (3 * original[0], original[1] / 3)
        for pet, ct in studies:
            check_study(pet, ct, "pet.mha", "ct.mha")
    finally:
        checks.BODY_MEDIAN_SUV = original


def _conversion(weight_kg: float, source: str = "PatientWeight") -> SuvConversion:
    return SuvConversion(method="qiba", units="BQML", decay_correction="START", corrected_image=("ATTN", "DECY"),
                         factor=1e-4, rule="test", weight_kg=weight_kg, weight_source=source)


@pytest.mark.parametrize("weight", [0.075, 0.5, 1500.0, 75000.0, float("nan")])
def test_a_body_weight_no_patient_has_is_refused(studies, weight):
    pet, ct = studies[0]
    with pytest.raises(InputError, match=rf"series 1: body weight {weight:g} kg \(PatientWeight\) is not a "
                                         r"patient's \(1 to 1000 kg\).*--weight-kg"):
        check_study(pet, ct, "series 1", "ct", suv=_conversion(weight))
    check_study(pet, ct, "series 1", "ct", suv=_conversion(PLAUSIBLE_WEIGHT_KG[0]))
    check_study(pet, ct, "series 1", "ct", suv=_conversion(PLAUSIBLE_WEIGHT_KG[1], "--weight-kg"))


def test_process_holds_weight_kg_to_the_same_range():
    import process

    for weight in ("0.9", "1000.5"):
        with pytest.raises(InputError, match=f"from {PLAUSIBLE_WEIGHT_KG[0]:g} to {PLAUSIBLE_WEIGHT_KG[1]:g}"):
            process.parse_args(["--weight-kg", weight, "--pet", "p", "--ct", "c", "--output", "o"])


def _dicom_study(root, pet: sitk.Image, ct: sitk.Image, weight: str) -> tuple:
    """The phantom as a Siemens PET series in Bq/ml (SUV x decayed dose / 75 kg) and its CT, PatientWeight
    ``weight``."""
    suv = sitk.GetArrayFromImage(pet)
    spacing, origin = pet.GetSpacing(), pet.GetOrigin()
    grid = Grid(z=[origin[2] + spacing[2] * k for k in range(suv.shape[0])], rows=suv.shape[1],
                columns=suv.shape[2], pixel_spacing=(spacing[1], spacing[0]), origin_xy=(origin[0], origin[1]))
    ids = StudyIds()
    decayed = 3.5e8 * 2 ** (-3900 / 6586.2)  # 09:15 to 10:20 (the helper's times), F-18
    series = pet_datasets(suv * decayed / 75000.0, grid, ids)
    ct_series = ct_datasets(sitk.GetArrayFromImage(ct).astype(float), grid, ids)
    for ds in (*series, *ct_series):
        ds.PatientWeight = weight
    write_series(series, root / "pet")
    write_series(ct_series, root / "ct")
    return root / "pet", root / "ct"


@pytest.mark.parametrize("weight", ["0.075", "0.5", "7500"])
def test_a_dicom_pet_whose_patient_weight_is_no_patients_is_refused(tmp_path, studies, weight):
    pet, ct = studies[0]
    pet_folder, ct_folder = _dicom_study(tmp_path, pet, ct, weight)
    loaded = path_case(pet_folder, ct_folder).load()
    with pytest.raises(InputError, match=rf"body weight {float(weight):g} kg \(PatientWeight\) is not a patient's"):
        check_study(loaded.pet, loaded.ct, "pet", "ct", suv=loaded.suv)


def test_a_dicom_pet_off_the_suv_scale_names_the_weight_its_factor_used(tmp_path, studies):
    pet, ct = studies[0]
    loaded = path_case(*_dicom_study(tmp_path, pet, ct, "7.5")).load()  # a patient's weight, not this one's
    with pytest.raises(InputError, match=r"PET is not in SUV \(its median in the body is 0\.0\d+;.*\(its SUV factor "
                                         r"[-0-9.e]+ from Units BQML, PatientWeight 7\.5 kg\)"):
        check_study(loaded.pet, loaded.ct, "pet", "ct", suv=loaded.suv)


def test_a_dicom_pet_with_a_patients_weight_passes(tmp_path, studies):
    pet, ct = studies[0]
    loaded = path_case(*_dicom_study(tmp_path, pet, ct, "75")).load()
    check_study(loaded.pet, loaded.ct, "pet", "ct", suv=loaded.suv)
    assert loaded.suv.weight_kg == 75.0
    assert np.allclose(sitk.GetArrayViewFromImage(loaded.pet), sitk.GetArrayViewFromImage(pet), atol=1e-3, rtol=1e-3)


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
    from studies import checks

    original = checks.MIN_OUTLINE_DICE
    try:
        checks.MIN_OUTLINE_DICE = MIN_OUTLINE_DICE + 0.1
        for pet, ct in studies:
            check_study(pet, ct, "pet.mha", "ct.mha")
    finally:
        checks.MIN_OUTLINE_DICE = original


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


def _with(image: sitk.Image, change) -> sitk.Image:
    array = sitk.GetArrayFromImage(sitk.Cast(image, sitk.sitkFloat32))
    change(array)
    changed = sitk.GetImageFromArray(array)
    changed.CopyInformation(image)
    return changed


def _corner(array):
    array[:, :3, :3] = np.nan  # a converter's padding beyond the field of view


def _edge_rows(array):
    array[:, :1, :] = np.inf


def _one_far_slice_corner(array):
    array[-1, -2:, -2:] = -np.inf


@pytest.mark.parametrize("role", ["PET", "CT"])
@pytest.mark.parametrize("pad", [_corner, _edge_rows, _one_far_slice_corner])
def test_non_finite_voxels_outside_the_body_are_filled_with_one_warning(studies, role, pad):
    pet, ct = (sitk.Cast(image, sitk.sitkFloat32) for image in studies[0])
    padded = _with(pet if role == "PET" else ct, pad)
    bad = ~np.isfinite(sitk.GetArrayViewFromImage(padded))
    used_pet, used_ct, notes = check_study(padded if role == "PET" else pet, padded if role == "CT" else ct,
                                           "pet.mha", "ct.mha")
    used = sitk.GetArrayViewFromImage(used_pet if role == "PET" else used_ct)
    assert np.isfinite(used).all() and (used[bad] == NONFINITE_FILL[role]).all()
    assert np.array_equal(used[~bad], sitk.GetArrayViewFromImage(padded)[~bad])
    assert notes == [f"{role.lower()}.mha: {bad.sum()} {role} voxel(s) NaN or infinite outside the body (padding "
                     f"beyond the field of view?) set to {NONFINITE_FILL[role]:g}"]


@pytest.mark.parametrize("bad", [np.inf, np.nan])
@pytest.mark.parametrize("role", ["PET", "CT"])
def test_non_finite_voxels_inside_the_body_are_refused(studies, bad, role):
    pet, ct = (sitk.Cast(image, sitk.sitkFloat32) for image in studies[0])
    body = np.argwhere(sitk.GetArrayViewFromImage(ct) > 0)  # soft tissue and bone
    z, y, x = body[len(body) // 2]

    def inside(array):
        array[z, y, x] = bad
        array[0, :2, :2] = bad  # and a corner outside: counted, not enough to pass

    with pytest.raises(InputError, match=rf"{role.lower()}\.mha: {role} holds 5 voxel\(s\) that are NaN or "
                                         r"infinite, 1 of them inside the body"):
        check_study(_with(pet, inside) if role == "PET" else pet, _with(ct, inside) if role == "CT" else ct,
                    "pet.mha", "ct.mha")


def test_a_pet_padded_with_nan_segments_and_says_so(tmp_path, studies):
    pet, ct = studies[0]
    pet_path, ct_path = write_case(tmp_path / "in", _with(pet, _corner), ct)
    result = run_case(pet_path, ct_path, tmp_path / "out" / "case0.mha", oracle_predictor())
    assert np.isfinite(result.suv).all() and result.out_path.exists()
    assert [note.split(": ", 1)[1] for note in result.study.loaded.warnings] == [
        f"{3 * 3 * pet.GetSize()[2]} PET voxel(s) NaN or infinite outside the body (padding beyond the field of view?) "
        "set to 0"]


def _direction(matrix) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(matrix, dtype=float).ravel())


def _rotation_z(degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])


SHEAR = np.eye(3) + 0.3 * np.eye(3, k=1)
NOT_ROTATIONS = {"shear 0.3": SHEAR, "scaled 2x": 2 * np.eye(3), "determinant 0.01": np.diag([1, 1, 0.01]),
                 "shear 0.005": np.eye(3) + 0.005 * np.eye(3, k=1), "one axis 1 % long": np.diag([1.01, 1, 1]),
                 "rotated then sheared": _rotation_z(30) @ SHEAR}


@pytest.mark.parametrize("name", NOT_ROTATIONS)
@pytest.mark.parametrize("role", ["PET", "CT"])
def test_direction_matrices_that_are_not_rotations_are_refused(tmp_path, studies, name, role):
    pet, ct = studies[0]
    changed = sitk.Image(pet if role == "PET" else ct)
    changed.SetDirection(_direction(NOT_ROTATIONS[name]))
    path = tmp_path / f"{role.lower()}.mha"  # as read from a MetaImage, which keeps the matrix as written
    sitk.WriteImage(changed, str(path))
    from studies.readers import read_image

    read = read_image(path, role)
    with pytest.raises(InputError, match=rf"{role.lower()}\.mha: {role} direction matrix .* is not orthonormal"):
        check_study(read if role == "PET" else pet, read if role == "CT" else ct, "pet.mha", "ct.mha")


@pytest.mark.parametrize("matrix", [_rotation_z(20), np.diag([-1.0, 1.0, 1.0]), np.eye(3)[[1, 0, 2]],
                                    np.diag([1.0, 1.0, -1.0]) @ _rotation_z(-90)])
def test_rotations_and_flips_are_directions(studies, matrix):
    pet, ct = studies[0]
    turned_pet, turned_ct = sitk.Image(pet), sitk.Image(ct)
    for image in (turned_pet, turned_ct):
        image.SetDirection(_direction(matrix))
    check_study(turned_pet, turned_ct, "pet.mha", "ct.mha")


def test_a_field_of_view_where_the_couch_is_as_large_as_the_body_passes():
    """24 slices of the thighs on a wide couch (the benchmark's study): the couch is half of what the CT calls
    body, so a median over both was 0 and the study was refused as "two different studies"."""
    pet, ct, _ = make_phantom(1, spec=PhantomSpec(size=256, slices=24)).images()
    check_study(pet, ct)
