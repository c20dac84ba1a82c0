"""Reading DICOM exports: study and series choice, one regular volume per series or one line saying why not."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import generate_uid

from model.errors import InputError
from model.geometry import CT_FILL_HU
from studies.cases import dicom_cases
from studies.dicom import (
    choose_series,
    convert,
    load_case,
    main,
    read_pet_suv,
    read_series,
    scan_folder,
    series_in_folder,
)
from tests.conftest import needs_tool
from tests.studies.dicom_series import (
    DCIODVFY,
    DRO_BUILDERS,
    DRO_GRID,
    DRO_SUVBW,
    Grid,
    StudyIds,
    ct_datasets,
    dciodvfy,
    pet_datasets,
    write_series,
)
from tests.studies.test_suv import SIEMENS_FACTOR

# PET: 6 rows x 5 columns, PixelSpacing (row 2.0, column 3.0) mm, 4 slices 3.27 mm apart.
PET_GRID = Grid(z=[-900.0 + 3.27 * k for k in range(4)])
# CT: 12 x 10 pixels of (1.0, 1.5) mm over the same extent, slices 1.635 mm apart: a finer grid.
CT_GRID = Grid(z=[-900.0 - 0.8175 + 1.635 * k for k in range(9)], rows=12, columns=10, pixel_spacing=(1.0, 1.5),
               origin_xy=(-8.25, -6.5))


def activity(shape=(4, 6, 5)) -> np.ndarray:
    z, y, x = np.indices(shape)
    return (1000.0 * (1 + z) + 100.0 * y + 10.0 * x + 5.0).astype(float)


def write_study(root, ids=None, vendor="ge", pet_values=None, reverse_names=True, ct=True):
    """A PACS-like export: nested folders, opaque names, a DICOMDIR and a stray text file."""
    ids = ids or StudyIds()
    pet = pet_datasets(activity() if pet_values is None else pet_values, PET_GRID, ids, vendor=vendor)
    if reverse_names:
        pet = pet[::-1]  # files named feet to head: order must come from the positions
    write_series(pet, root / ids.patient_id / "S1" / "PT", pattern="IM{k:05d}")
    if ct:
        z, y, x = np.indices((len(CT_GRID.z), CT_GRID.rows, CT_GRID.columns))
        hu = (20.0 * x - 5.0 * y + 3.0 * z - 100.0)
        write_series(ct_datasets(hu, CT_GRID, ids), root / ids.patient_id / "S1" / "CT" / "deeper", "{uid}")
    (root / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    (root / ids.patient_id / "README.txt").write_text("exported by PACS\n")
    return ids


def test_pet_and_ct_of_one_study_give_suv_on_the_pet_grid_and_ct_resampled_onto_it(tmp_path):
    ids = write_study(tmp_path)
    studies = scan_folder(tmp_path)
    assert [s.uid for s in studies] == [ids.study_uid]
    case = load_case(studies[0])
    pet = case.pet.image
    assert pet.GetSize() == (5, 6, 4)
    # PixelSpacing is (row, column) = (y, x): x spacing 3.0, y spacing 2.0.
    assert pet.GetSpacing() == pytest.approx((3.0, 2.0, 3.27))
    assert pet.GetOrigin() == pytest.approx((-7.5, -6.0, -900.0))
    assert pet.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    # GE: 09:15:00 to the series time 10:20:00 on the series date, GE half-life 6588 s; every slice its slope.
    factor = 75_000 / (3.5e8 * 2 ** (-3900 / 6588))
    assert case.suv.factor == pytest.approx(factor, rel=1e-9)
    slopes = {float(ds.RescaleSlope) for ds in case.pet.headers}
    assert len(slopes) == 4
    np.testing.assert_allclose(sitk.GetArrayFromImage(pet), activity() * factor, rtol=2e-4)
    assert [ds.InstanceNumber for ds in case.pet.headers] == [1, 2, 3, 4]
    # CT in HU on its own grid (localizer-free), then resampled onto the PET grid.
    ct = case.ct.image
    assert ct.GetSize() == (10, 12, 9) and ct.GetSpacing() == pytest.approx((1.5, 1.0, 1.635))
    from model.geometry import resample_onto
    ct_on_pet = resample_onto(ct, pet, CT_FILL_HU)
    # CT value at a physical point: 20 x column - 5 x row + 3 x slice - 100, linear in space.
    point = pet.TransformIndexToPhysicalPoint((2, 3, 1))
    column, row, slice_ = ct.TransformPhysicalPointToContinuousIndex(point)
    expected = 20 * column - 5 * row + 3 * slice_ - 100
    assert sitk.GetArrayFromImage(ct_on_pet)[1, 3, 2] == pytest.approx(expected, abs=1e-3)


def test_converter_writes_the_autopet_layout_that_train_prepare_finds(tmp_path, capsys):
    ids = write_study(tmp_path / "dicom", vendor="siemens")
    assert main([str(tmp_path / "dicom"), str(tmp_path / "out")]) == 0
    folder = tmp_path / "out" / ids.patient_id / ids.study_uid
    assert sorted(p.name for p in folder.iterdir()) == ["CTres.nii.gz", "SUV.nii.gz", "suv.json"]
    suv = sitk.ReadImage(str(folder / "SUV.nii.gz"))
    ctres = sitk.ReadImage(str(folder / "CTres.nii.gz"))
    assert ctres.GetSize() == suv.GetSize() and ctres.GetOrigin() == pytest.approx(suv.GetOrigin())
    np.testing.assert_allclose(sitk.GetArrayFromImage(suv), activity() * SIEMENS_FACTOR, rtol=2e-4)
    import json
    document = json.loads((folder / "suv.json").read_text())
    assert document["suv"]["factor"] == pytest.approx(SIEMENS_FACTOR, rel=1e-9)
    assert document["suv"]["method"] == "qiba"
    from train.prepare import find_studies
    studies = find_studies(tmp_path / "out", "tcia")
    assert [(s.patient, s.pet, s.ct, s.mask) for s in studies] == [
        (ids.patient_id, folder / "SUV.nii.gz", folder / "CTres.nii.gz", folder / "SEG.nii.gz")]


def test_converter_goes_on_after_a_failed_study_and_leaves_nothing_of_it(tmp_path, capsys):
    good = write_study(tmp_path / "dicom", vendor="siemens")
    bad = write_study(tmp_path / "dicom", StudyIds(patient_id="PETCT_bad"), vendor="siemens")
    for path in (tmp_path / "dicom" / bad.patient_id).rglob("IM*"):
        ds = pydicom.dcmread(path)
        del ds.PatientWeight
        ds.save_as(path)
    assert convert(tmp_path / "dicom", tmp_path / "out") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "PatientWeight missing" in err[0] and bad.patient_id in err[0]
    assert (tmp_path / "out" / good.patient_id / good.study_uid / "suv.json").is_file()
    assert not (tmp_path / "out" / bad.patient_id).exists()
    assert convert(tmp_path / "dicom", tmp_path / "out2", weight_kg=70.0) == 0


@pytest.mark.parametrize("name", DRO_BUILDERS)
def test_the_ibsi_manual_reference_object_paths_give_suvbw(tmp_path, name):
    # Each of the manual's digital reference objects, rebuilt from its description (issue 27): SUVbw 0.2 / 1 / 4
    # in every slice, whatever the header path; the frames of a series decay corrected one by one included.
    write_series(DRO_BUILDERS[name][1](), tmp_path / name)
    (study,) = scan_folder(tmp_path / name)
    (pet,) = study.series.values()
    volume, _ = read_pet_suv(pet)
    expected = np.repeat(DRO_SUVBW[None], len(DRO_GRID.z), axis=0)
    np.testing.assert_allclose(sitk.GetArrayFromImage(volume.image), expected, rtol=1e-3)


def test_conversion_notes_are_warning_lines_and_in_suv_json(tmp_path, capsys):
    ids = write_study(tmp_path / "dicom", vendor="siemens")
    for path in (tmp_path / "dicom" / ids.patient_id).rglob("IM*"):
        ds = pydicom.dcmread(path)
        if ds.Modality == "PT":
            info = ds.RadiopharmaceuticalInformationSequence[0]
            info.RadionuclideTotalDose, info.RadionuclideHalfLife = "350", "4057.7"  # MBq of Ga-68
            ds.save_as(path)
    assert main([str(tmp_path / "dicom"), str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "read as MBq" in err and "not FDG" in err
    import json
    document = json.loads((tmp_path / "out" / ids.patient_id / ids.study_uid / "suv.json").read_text())
    assert any("not FDG" in line for line in document["warnings"])
    assert any("read as MBq" in line for line in document["suv"]["notes"])


def test_multi_bed_gaps_are_accepted_with_the_median_spacing(tmp_path):
    # A real Discovery ST series: gaps of 3.27 mm, four of 3.29 and one of 3.19.
    gaps = [3.27] * 12 + [3.29] * 4 + [3.19]
    z = np.concatenate([[0.0], np.cumsum(gaps)])
    grid = Grid(z=list(z))
    values = np.ones((len(z), grid.rows, grid.columns)) * 2000.0
    write_series(pet_datasets(values, grid, StudyIds(), vendor="ge"), tmp_path)
    volume = read_series(series_in_folder(tmp_path, "PT"))
    assert volume.image.GetSize()[2] == len(z)
    assert volume.image.GetSpacing()[2] == pytest.approx(3.27)


def test_files_without_preamble_or_meta_information(tmp_path):
    values = np.arange(3 * 30, dtype=float).reshape(3, 6, 5) * 10.0
    write_series(ct_datasets(values, Grid(z=[0.0, 3.0, 6.0]), StudyIds()), tmp_path, pattern="{k}", raw=True)
    assert (tmp_path / "0").read_bytes()[:2] == b"\x08\x00"
    volume = read_series(series_in_folder(tmp_path, "CT"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume.image), values)


def test_a_missing_slice_is_refused(tmp_path):
    grid = Grid(z=[0.0, 3.0, 6.0, 12.0, 15.0])
    write_series(pet_datasets(np.ones((5, 6, 5)), grid, StudyIds()), tmp_path / "pet")
    with pytest.raises(InputError, match=r"gap of 6.00 mm .*usually 3.00 mm \(a missing slice\?\)") as error:
        read_series(series_in_folder(tmp_path, "PT"))
    assert str(tmp_path / "pet") in str(error.value)


def test_gantry_tilt_is_refused(tmp_path):
    ids = StudyIds()
    datasets = ct_datasets(np.zeros((5, 6, 5)), Grid(z=[0.0, 3.0, 6.0, 9.0, 12.0]), ids)
    for k, ds in enumerate(datasets):  # origins drift 0.5 mm per slice along y: a 9.5 degree tilt
        position = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [position[0], position[1] + 0.5 * k, position[2]]
        ds.GantryDetectorTilt = "9.5"
    write_series(datasets, tmp_path)
    with pytest.raises(InputError, match=r"gantry tilt 9.5 deg"):
        read_series(series_in_folder(tmp_path, "CT"))


def test_oblique_orientation_is_read_along_its_normal(tmp_path):
    angle = np.deg2rad(20)
    orientation = (np.cos(angle), np.sin(angle), 0.0, -np.sin(angle), np.cos(angle), 0.0)
    grid = Grid(z=[0.0, 4.0, 8.0], orientation=tuple(round(v, 6) for v in orientation))
    write_series(ct_datasets(np.zeros((3, 6, 5)), grid, StudyIds()), tmp_path)
    image = read_series(series_in_folder(tmp_path, "CT")).image
    assert image.GetSpacing() == pytest.approx((3.0, 2.0, 4.0))
    assert image.GetDirection()[:2] == pytest.approx((np.cos(angle), -np.sin(angle)), abs=1e-6)


def test_duplicates_and_localizers_are_dropped(tmp_path):
    ids = StudyIds()
    datasets = ct_datasets(np.arange(4 * 30).reshape(4, 6, 5).astype(float), Grid(z=[0.0, 3.0, 6.0, 9.0]), ids)
    copy = ct_datasets(np.arange(30, 60).reshape(1, 6, 5).astype(float), Grid(z=[3.0]), ids,
                       series_uid=datasets[0].SeriesInstanceUID)[0]
    copy.InstanceNumber = 50  # same position and pixels as slice 2, a later instance number: dropped
    scout = ct_datasets(np.zeros((1, 6, 5)), Grid(z=[0.0], orientation=(1, 0, 0, 0, 0, -1)), ids,
                        series_uid=datasets[0].SeriesInstanceUID)[0]
    write_series([*datasets, copy, scout], tmp_path)
    volume = read_series(series_in_folder(tmp_path, "CT"))
    assert volume.image.GetSize() == (5, 6, 4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume.image), np.arange(120).reshape(4, 6, 5))
    assert volume.image.GetPixelID() == sitk.sitkInt16  # integral rescale: HU kept as integers


def test_several_volumes_in_one_series_are_refused(tmp_path):
    ids = StudyIds()
    first = pet_datasets(np.ones((3, 6, 5)), Grid(z=[0.0, 3.0, 6.0]), ids)
    second = pet_datasets(np.ones((3, 6, 5)), Grid(z=[0.0, 3.0, 6.0]), ids, series_uid=first[0].SeriesInstanceUID)
    write_series([*first, *second], tmp_path)
    with pytest.raises(InputError, match="6 images at 3 positions"):
        read_series(series_in_folder(tmp_path, "PT"))


def test_multi_frame_is_refused(tmp_path):
    datasets = pet_datasets(np.ones((2, 6, 5)), Grid(z=[0.0, 3.0]), StudyIds())
    datasets[0].NumberOfFrames = 2
    write_series(datasets, tmp_path)
    with pytest.raises(InputError, match="multi-frame"):
        read_series(series_in_folder(tmp_path, "PT"))


def test_dynamic_pet_is_refused(tmp_path):
    ids = write_study(tmp_path, vendor="siemens")
    for path in (tmp_path / ids.patient_id).rglob("IM*"):
        ds = pydicom.dcmread(path)
        ds.SeriesType = ["DYNAMIC", "IMAGE"]
        ds.NumberOfTimeSlices = 12
        ds.save_as(path)
    study = scan_folder(tmp_path)[0]
    with pytest.raises(InputError, match="only dynamic or gated PET"):
        choose_series(study)
    pet = next(s for s in study.series.values() if s.modality == "PT")
    with pytest.raises(InputError, match=r"a dynamic PET series .* not supported"):
        read_series(pet)


def test_undecodable_transfer_syntax_is_one_line(tmp_path):
    datasets = ct_datasets(np.zeros((2, 6, 5)), Grid(z=[0.0, 3.0]), StudyIds())
    for ds in datasets:  # JPEG Lossless (process 14): Pillow cannot decode it, pylibjpeg or GDCM could
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.70"
        ds.PixelData = encapsulate([b"\xff\xd8 not really a JPEG \xff\xd9"])
    write_series(datasets, tmp_path)
    with pytest.raises(InputError, match="cannot be decoded") as error:
        read_series(series_in_folder(tmp_path, "CT"))
    assert "\n" not in str(error.value) and "JPEG Lossless" in str(error.value)


def test_two_pet_candidates_are_listed_and_a_uid_chooses(tmp_path):
    ids = write_study(tmp_path, vendor="siemens")
    second = pet_datasets(activity(), PET_GRID, ids, description="PET WB PSF")
    write_series(second, tmp_path / "other")
    study = scan_folder(tmp_path)[0]
    with pytest.raises(InputError, match="2 PET series could be the one") as error:
        choose_series(study)
    message = str(error.value)
    assert second[0].SeriesInstanceUID in message and "PT 'PET WB PSF' 2020-01-01 10:20, 4 images" in message
    assert "--pet-series" in message and "\n" not in message
    pet, ct = choose_series(study, pet_series=second[0].SeriesInstanceUID)
    assert pet.description == "PET WB PSF" and ct.modality == "CT"


def test_series_choice_asks_once_for_every_choice_needed_and_takes_a_number(tmp_path):
    # Two static AC PETs and two CTs in the PET's frame of reference: one message asks for both, listing
    # each candidate with its number, modality, description, date and images.
    ids = write_study(tmp_path, vendor="siemens")
    psf = pet_datasets(activity(), PET_GRID, ids, description="PET WB PSF")
    write_series(psf, tmp_path / "psf")
    low = ct_datasets(np.zeros((3, 6, 5)), Grid(z=[0.0, 3.0, 6.0]), ids, description="CT low dose")
    write_series(low, tmp_path / "low")
    with pytest.raises(InputError) as error:
        choose_series(scan_folder(tmp_path)[0])
    message = str(error.value)
    assert "choose --pet-series and --ct-series" in message and "\n" not in message
    listed = re.findall(r"\[(\d+)\] (PT|CT) '([^']*)' (\S+ \S+), (\d+) images, ([\d.]+)", message)
    assert sorted((modality, text, count) for _, modality, text, _, count, _ in listed) == [
        ("CT", "CT WB 3.0 B30f", "9"), ("CT", "CT low dose", "3"), ("PT", "PET WB AC", "4"), ("PT", "PET WB PSF", "4")]
    assert {when for *_, when, _, _ in listed} == {"2020-01-01 10:20", "2020-01-01 10:05"}
    number = {text: int(n) for n, _, text, *_ in listed}
    uid = {text: series_uid for _, _, text, _, _, series_uid in listed}
    assert psf[0].SeriesInstanceUID in message and low[0].SeriesInstanceUID in message
    # The answer by numbers (one run), through the folder's cases as process.py takes them; a UID still works.
    (case,) = dicom_cases(tmp_path, pet_series=str(number["PET WB PSF"]), ct_series=str(number["CT low dose"]))
    assert psf[0].SeriesInstanceUID in case.pet_label and low[0].SeriesInstanceUID in case.ct_label
    assert case.load().ct.GetSize()[2] == 3
    (case,) = dicom_cases(tmp_path, pet_series=psf[0].SeriesInstanceUID, ct_series=str(number["CT WB 3.0 B30f"]))
    assert psf[0].SeriesInstanceUID in case.pet_label and uid["CT WB 3.0 B30f"] in case.ct_label
    with pytest.raises(InputError, match=r"--ct-series 9: no such series .*1 to 4"):
        dicom_cases(tmp_path, ct_series="9")
    with pytest.raises(InputError, match=r"--pet-series .* is a CT series, not PET"):
        dicom_cases(tmp_path, pet_series=str(number["CT low dose"]))[0].load()


def test_a_ct_choice_alone_is_asked_alone_and_numbers_run_across_studies(tmp_path):
    # No CT in the PET's frame of reference and two of the largest size: only --ct-series is asked. A second
    # study in the folder: its series are numbered after the first's, so a number names one series anywhere.
    first = write_study(tmp_path / "one", vendor="siemens", ct=False)
    other = StudyIds(study_uid=first.study_uid)  # same study, another frame of reference
    for description in ("CT A", "CT B"):
        write_series(ct_datasets(np.zeros((3, 6, 5)), Grid(z=[0.0, 3.0, 6.0]), other, description=description),
                     tmp_path / "one" / description)
    write_study(tmp_path / "two", StudyIds(patient_id="ZZZ"), vendor="siemens")
    studies = scan_folder(tmp_path)
    assert [s.number for study in studies for s in study.series.values()] == [1, 2, 3, 4, 5]
    with pytest.raises(InputError) as error:
        choose_series(studies[0])
    message = str(error.value)
    assert "choose --ct-series;" in message and "--pet-series" not in message.split("(e.g.")[0]
    assert "no CT shares the PET's frame of reference and 2 are the largest" in message
    number = dict(re.findall(r"\[(\d+)\] CT '(CT [AB])'", message))
    assert sorted(number) == ["2", "3"] and "(e.g. --ct-series 2)" in message  # same SeriesNumber: by UID
    cases = dicom_cases(tmp_path, ct_series={text: n for n, text in number.items()}["CT B"])
    assert cases[0].ct_label.startswith(str(tmp_path / "one" / "CT B")) and cases[0].load().ct.GetSize()[2] == 3
    assert cases[1].ct_label.startswith(str(tmp_path / "two"))  # the other study chooses by its own rules


def test_non_attenuation_corrected_pet_is_not_a_candidate(tmp_path):
    ids = write_study(tmp_path, vendor="siemens")
    nac = pet_datasets(activity(), PET_GRID, ids, description="PET WB NAC")
    for ds in nac:
        ds.CorrectedImage = ["NORM", "DTIM", "DECY", "RAN"]
    write_series(nac, tmp_path / "nac")
    pet, _ = choose_series(scan_folder(tmp_path)[0])
    assert pet.description == "PET WB AC"


def test_no_ct_is_one_line_and_the_largest_ct_is_taken_without_a_matching_frame_of_reference(tmp_path):
    ids = write_study(tmp_path, vendor="siemens", ct=False)
    with pytest.raises(InputError, match="no CT series"):
        choose_series(scan_folder(tmp_path)[0])
    other = StudyIds(study_uid=ids.study_uid)  # same study, another frame of reference
    write_series(ct_datasets(np.zeros((3, 6, 5)), Grid(z=[0.0, 3.0, 6.0]), other, description="small"), tmp_path / "a")
    write_series(ct_datasets(np.zeros((5, 6, 5)), Grid(z=[0.0, 3.0, 6.0, 9, 12]), other, description="large"),
                 tmp_path / "b")
    _, ct = choose_series(scan_folder(tmp_path)[0])
    assert ct.description == "large"


def test_real_ct_file_from_pydicom(tmp_path):
    """CT_small.dcm (a real GE CT image, not written here): three copies one slice apart make a volume."""
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    position = [float(v) for v in source.ImagePositionPatient]
    for k in range(3):
        ds = source.copy()
        ds.SOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = [position[0], position[1], position[2] + 5.0 * k]
        ds.InstanceNumber = k + 1
        ds.save_as(tmp_path / f"slice{k}", enforce_file_format=True)
    # The original as well, under an odd name: at the first copy's position, so a duplicate that is dropped.
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "also_a_txt_file.txt.bak")
    volume = read_series(series_in_folder(tmp_path, "CT"))
    expected = source.pixel_array * float(source.RescaleSlope) + float(source.RescaleIntercept)
    for k in range(3):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(volume.image)[k], expected)
    spacing = [float(v) for v in source.PixelSpacing]
    assert volume.image.GetSpacing() == pytest.approx((spacing[1], spacing[0], 5.0))
    assert volume.image.GetOrigin() == pytest.approx(position)


def test_a_series_uid_that_is_nowhere_is_refused(tmp_path):
    write_study(tmp_path, vendor="siemens")
    with pytest.raises(InputError, match=r"--pet-series 1\.2\.3: no such series"):
        convert(tmp_path, tmp_path / "out", pet_series="1.2.3")


def test_read_pet_suv_refuses_before_reading_pixels(tmp_path):
    ids = write_study(tmp_path, vendor="siemens")
    for path in (tmp_path / ids.patient_id).rglob("IM*"):
        ds = pydicom.dcmread(path)
        ds.Units = "PROPCNTS"
        ds.PixelData = b""  # would fail to decode; the SUV check comes first
        ds.save_as(path)
    pet = next(s for s in scan_folder(tmp_path)[0].series.values() if s.modality == "PT")
    with pytest.raises(InputError, match="Units PROPCNTS"):
        read_pet_suv(pet)


# Checks against readers and validators not written here.
OBLIQUE = np.deg2rad(20)
GRIDS = {
    "axial, feet first": PET_GRID,
    "axial, written head first": Grid(z=[10.0 - 3.0 * k for k in range(5)]),
    "oblique": Grid(z=[0.0, 4.0, 8.0], orientation=tuple(round(v, 6) for v in (
        np.cos(OBLIQUE), np.sin(OBLIQUE), 0.0, -np.sin(OBLIQUE), np.cos(OBLIQUE), 0.0))),
    "coronal": Grid(z=[0.0, 2.0, 4.0], orientation=(1, 0, 0, 0, 0, -1)),
}


def gdcm_series(folder) -> sitk.Image:
    """The series as ITK's GDCM reader sees it: its own file sorting, geometry and rescaling (per file)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    reader.SetOutputPixelType(sitk.sitkFloat32)
    return reader.Execute()


def assert_same_volume(ours: sitk.Image, theirs: sitk.Image, rtol: float = 0.0) -> None:
    assert ours.GetSize() == theirs.GetSize()
    assert ours.GetOrigin() == pytest.approx(theirs.GetOrigin(), abs=1e-4)
    assert ours.GetSpacing() == pytest.approx(theirs.GetSpacing(), rel=1e-6)
    assert ours.GetDirection() == pytest.approx(theirs.GetDirection(), abs=1e-6)
    np.testing.assert_allclose(sitk.GetArrayFromImage(ours).astype(np.float32), sitk.GetArrayFromImage(theirs),
                               rtol=rtol, atol=0)


@pytest.mark.parametrize("grid", GRIDS.values(), ids=GRIDS.keys())
@pytest.mark.parametrize("modality", ["CT", "PT"])
def test_geometry_and_values_match_simpleitk_gdcm(tmp_path, grid, modality):
    """Origin, spacing, direction and voxels as GDCM reads them, PET with a rescale slope per slice (GE)."""
    shape = (len(grid.z), grid.rows, grid.columns)
    rng = np.random.default_rng(len(grid.z))
    if modality == "CT":
        datasets = ct_datasets(rng.integers(-1000, 2000, shape).astype(float), grid, StudyIds())
    else:
        datasets = pet_datasets(rng.uniform(0, 30000, shape), grid, StudyIds(), vendor="ge")
        assert len({ds.RescaleSlope for ds in datasets}) == len(datasets)
    write_series(datasets, tmp_path, pattern="{uid}")  # names in no order: both readers sort by position
    ours = read_series(series_in_folder(tmp_path, modality)).image
    assert_same_volume(ours, gdcm_series(tmp_path), rtol=1e-6 if modality == "PT" else 0.0)


def stack_of_copies(name: str, folder, count: int = 3, gap_mm: float = 5.0) -> None:
    """A volume from one real image of pydicom's test files: copies ``gap_mm`` apart along its own normal."""
    source = pydicom.dcmread(get_testdata_file(name))
    cosines = np.array([float(v) for v in source.ImageOrientationPatient])
    normal = np.cross(cosines[:3], cosines[3:])
    position = np.array([float(v) for v in source.ImagePositionPatient])
    folder.mkdir()
    for k in range(count):
        ds = source.copy()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position + gap_mm * k * normal]
        ds.InstanceNumber = k + 1
        ds.save_as(folder / f"slice{count - k}")


# Real CT images (GE explicit VR; JPEG 2000; JPEG 2000 whose stream disagrees with PixelRepresentation, on a
# tilted plane), none written by this project.
REAL_CT = ("CT_small.dcm", "693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm")


@pytest.mark.parametrize("name", REAL_CT)
def test_real_ct_images_read_as_gdcm_reads_them(tmp_path, name):
    syntax = pydicom.dcmread(get_testdata_file(name), stop_before_pixels=True).file_meta.TransferSyntaxUID
    if not get_decoder(syntax).is_available:
        pytest.skip(f"pydicom cannot decode {syntax.name} here (needs {get_decoder(syntax).missing_dependencies})")
    stack_of_copies(name, tmp_path / "ct")
    ours = read_series(series_in_folder(tmp_path / "ct", "CT")).image
    assert_same_volume(ours, gdcm_series(tmp_path / "ct"))
    assert sitk.GetArrayViewFromImage(ours).std() > 100  # a real image, not a decoder's zeros


@needs_tool(DCIODVFY, "dciodvfy (dicom3tools)")
@pytest.mark.parametrize("vendor", ["siemens", "ge", "philips"])
def test_the_test_series_are_valid_pet_and_ct_iods(tmp_path, vendor):
    """The builders are meant to look real: dciodvfy must find no error in their PET and CT images."""
    ids = StudyIds()
    pet = write_series(pet_datasets(activity(), PET_GRID, ids, vendor=vendor), tmp_path / "pet")
    ct = write_series(ct_datasets(np.zeros((2, 6, 5)), Grid(z=[0.0, 3.0]), ids), tmp_path / "ct")
    pet_errors, pet_warnings = dciodvfy(pet[0])
    assert pet_errors == [] and pet_warnings == []
    ct_errors, ct_warnings = dciodvfy(ct[0])
    # Siemens' fourth ImageType value is not a defined term of the standard: kept, since real CTs carry it.
    assert ct_errors == [] and all("CT_SOM5 SPI" in w for w in ct_warnings)
