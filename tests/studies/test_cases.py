"""Case sources of a local run (a DICOM export, --pet/--ct files or series folders) and the outputs beside a
mask, written all or none."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
import SimpleITK as sitk

import results.outputs
import studies.cases
from model.errors import InputError, WriteError
from phantoms import make_phantom
from results.outputs import CaseDocuments, report_outputs, write_reports
from results.report import body_volume_ml, lesion_report, rounded_headline
from studies.cases import NAMING_RULE, CaseSource, InputRequest, dicom_cases, find_cases, path_case
from tests.conftest import SMALL_SPEC
from tests.studies.dicom_series import Grid, StudyIds, ct_datasets, pet_datasets, write_series
from tests.studies.test_suv import SIEMENS_FACTOR

MEMBERS = {"version": "0.1.0", "weights_sha256": {"fold0.safetensors": "ab" * 32}, "ensemble": 1}


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(3, positive=True, spec=SMALL_SPEC)


def phantom_grid(phantom) -> Grid:
    depth, rows, columns = phantom.pet.shape
    sx, sy, sz = phantom.spacing
    return Grid(z=[-900.0 + sz * k for k in range(depth)], rows=rows, columns=columns, pixel_spacing=(sy, sx),
                origin_xy=(-columns * sx / 2, -rows * sy / 2))


def write_phantom_study(folder, phantom, ids: StudyIds, extra_pet: bool = False) -> tuple[list, list]:
    """The phantom as a Siemens PET (Bq/ml that give its SUV) and a CT on the same grid, one study."""
    grid = phantom_grid(phantom)
    pet = pet_datasets(phantom.pet / SIEMENS_FACTOR, grid, ids)
    ct = ct_datasets(phantom.ct.astype(float), grid, ids)
    write_series(pet, folder / "PT", pattern="{uid}")
    write_series(ct, folder / "CT", pattern="{uid}")
    if extra_pet:
        write_series(pet_datasets(phantom.pet / SIEMENS_FACTOR, grid, ids, description="PET WB PSF"), folder / "PT2")
    return pet, ct


def test_a_dicom_folder_gives_one_case_per_study_and_an_ambiguous_study_fails_alone(tmp_path, phantom):
    good, ambiguous = StudyIds(patient_id="A001"), StudyIds(patient_id="B002")
    pet, _ = write_phantom_study(tmp_path / "export" / "a", phantom, good)
    write_phantom_study(tmp_path / "export" / "b", phantom, ambiguous, extra_pet=True)
    cases = dicom_cases(tmp_path / "export")
    assert [c.name.split("_")[0] for c in cases] == ["A001", "B002"]
    assert all(c.is_dicom and c.mask_suffix == ".nii.gz" for c in cases)
    assert pet[0].SeriesInstanceUID in cases[0].pet_label
    loaded = cases[0].load()
    assert loaded.pet.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(sitk.GetArrayFromImage(loaded.pet), phantom.pet, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(loaded.ct), phantom.ct)
    assert loaded.suv.factor == pytest.approx(SIEMENS_FACTOR, rel=1e-9)
    assert len(loaded.pet_headers) == phantom.pet.shape[0]
    with pytest.raises(InputError, match=r"2 PET series could be the one.*--pet-series") as error:
        cases[1].load()
    assert "\n" not in str(error.value) and ambiguous.study_uid in cases[1].pet_label


def test_a_dicom_folder_that_cannot_be_used_at_all_is_one_line(tmp_path):
    with pytest.raises(InputError, match="DICOM folder missing"):
        dicom_cases(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("no images here\n")
    with pytest.raises(InputError, match="no DICOM images"):
        dicom_cases(tmp_path)
    write_series(ct_datasets(np.zeros((2, 6, 5)), Grid(z=[0.0, 3.0]), StudyIds()), tmp_path / "ct")
    with pytest.raises(InputError, match=r"--pet-series 1\.2\.3: no such series"):
        dicom_cases(tmp_path, pet_series="1.2.3")
    with pytest.raises(InputError, match="body weight nan kg"):
        dicom_cases(tmp_path, weight_kg=float("nan"))


def test_studies_with_the_same_name_get_distinct_outputs(tmp_path):
    uid = "1.2.3.4.5.6789"
    for k, study_uid in enumerate((f"{uid}.1.12345678", f"{uid}.2.12345678")):  # the same last 8 digits
        ids = StudyIds(study_uid=study_uid)
        write_series(ct_datasets(np.zeros((2, 6, 5)), Grid(z=[0.0, 3.0]), ids), tmp_path / f"s{k}")
    names = [c.name for c in dicom_cases(tmp_path)]
    assert len(set(names)) == 2 and names[1] == f"{names[0]}_2"


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_pet_and_ct_files(tmp_path, phantom, suffix):
    pet, ct, _ = phantom.images()
    sitk.WriteImage(pet, str(tmp_path / f"patient7_pet{suffix}"))
    sitk.WriteImage(ct, str(tmp_path / f"patient7_ct{suffix}"))
    case = path_case(tmp_path / f"patient7_pet{suffix}", tmp_path / f"patient7_ct{suffix}")
    assert (case.name, case.mask_suffix, case.is_dicom) == ("patient7_ct", suffix, False)  # named after its CT
    assert case.pet_label.endswith(f"patient7_pet{suffix}")
    loaded = case.load()
    assert loaded.suv is None and loaded.pet_headers is None
    np.testing.assert_array_equal(sitk.GetArrayFromImage(loaded.pet), phantom.pet)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(loaded.ct), phantom.ct)


def test_pet_and_ct_paths_that_are_wrong_are_one_line(tmp_path, phantom):
    pet, ct, _ = phantom.images()
    sitk.WriteImage(pet, str(tmp_path / "pet.nii.gz"))
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    with pytest.raises(InputError, match="PET file is in SUV already; --weight-kg"):
        path_case(tmp_path / "pet.nii.gz", tmp_path / "ct.nii.gz", weight_kg=70.0)
    datasets = ct_datasets(np.zeros((2, 6, 5)), Grid(z=[0.0, 3.0]), StudyIds())
    (slice_file, _) = write_series(datasets, tmp_path / "ct_series")
    with pytest.raises(InputError, match=r"the CT must be a \.mha/\.nii\.gz/\.nii file or a DICOM series folder"):
        path_case(tmp_path / "pet.nii.gz", slice_file)
    with pytest.raises(InputError, match="no PT DICOM series in this folder"):
        path_case(tmp_path / "ct_series", tmp_path / "ct.nii.gz")
    case = path_case(tmp_path / "missing.nii.gz", tmp_path / "ct.nii.gz")  # files are read by load()
    with pytest.raises(InputError, match=r"missing\.nii\.gz: PET file missing"):
        case.load()


def test_pet_and_ct_series_folders_and_a_mix_of_folder_and_file(tmp_path, phantom):
    ids = StudyIds(patient_id="P9")
    write_phantom_study(tmp_path / "study", phantom, ids)
    case = path_case(tmp_path / "study" / "PT", tmp_path / "study" / "CT", weight_kg=80.0)
    assert case.is_dicom and case.mask_suffix == ".nii.gz" and case.name.startswith("P9_20200101_")
    loaded = case.load()
    # --weight-kg replaces the header's 75 kg: SUV scales with the weight.
    assert loaded.suv.weight_kg == 80.0 and loaded.suv.factor == pytest.approx(SIEMENS_FACTOR * 80 / 75)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(loaded.ct), phantom.ct)
    sitk.WriteImage(loaded.ct, str(tmp_path / "ct.nii.gz"))
    mixed = path_case(tmp_path / "study" / "PT", tmp_path / "ct.nii.gz", suv_method="autopet").load()
    assert mixed.suv.method == "autopet" and mixed.pet_headers is not None
    assert mixed.ct.GetOrigin() == pytest.approx(loaded.ct.GetOrigin())
    write_series(pet_datasets(phantom.pet[:4], phantom_grid(phantom), ids), tmp_path / "study" / "PT" / "other")
    with pytest.raises(InputError, match="2 PT series, expected one"):
        path_case(tmp_path / "study" / "PT", tmp_path / "ct.nii.gz")


def write_local_outputs(case, loaded, mask, out_dir, info) -> dict:
    return write_reports(CaseDocuments(case=case, loaded=loaded, mask=mask, model_info=info), out_dir)


def output_paths(case, out_dir) -> dict[str, Path]:
    return {output.kind: out_dir / output.file_name(case) for output in report_outputs(case)}


@pytest.fixture(scope="module")
def dicom_case(tmp_path_factory, phantom) -> tuple[CaseSource, studies.cases.LoadedCase, sitk.Image]:
    folder = tmp_path_factory.mktemp("dicom_case")
    write_phantom_study(folder, phantom, StudyIds())
    (case,) = dicom_cases(folder)
    loaded = case.load()
    mask = sitk.GetImageFromArray(phantom.mask)
    mask.CopyInformation(loaded.pet)
    return case, loaded, mask


def test_outputs_of_a_dicom_case(tmp_path, dicom_case):
    case, loaded, mask = dicom_case
    out = tmp_path / "out"
    out.mkdir()
    headline = write_local_outputs(case, loaded, mask, out, MEMBERS)
    paths = output_paths(case, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths.values())  # nothing else
    expected = lesion_report(loaded.pet, mask, body_ml=body_volume_ml(loaded.ct))
    assert headline == rounded_headline(expected) and headline["lesion_count"] >= 1
    with open(paths["lesions"]) as handle:
        assert len(list(csv.DictReader(handle))) == expected.lesion_count
    document = json.loads(paths["report"].read_text())
    assert document["suv"] == json.loads(json.dumps(loaded.suv.to_dict())) and document["model"] == MEMBERS
    assert paths["picture"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    seg = hd.seg.segread(paths["seg"])
    uids = [str(ds.SOPInstanceUID) for ds in loaded.pet_headers]
    volume = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1],
                                               assert_missing_frames_are_empty=True)
    np.testing.assert_array_equal(volume[..., 0], sitk.GetArrayFromImage(mask))
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmVersion == "0.1.0" and "ab" * 32 in algorithm.AlgorithmParameters


def test_outputs_of_a_file_case_have_no_seg(tmp_path, phantom):
    pet, ct, mask = phantom.images()
    sitk.WriteImage(pet, str(tmp_path / "pet.mha"))
    sitk.WriteImage(ct, str(tmp_path / "ct.mha"))
    case = path_case(tmp_path / "pet.mha", tmp_path / "ct.mha")
    loaded = case.load()
    mask.CopyInformation(loaded.pet)
    (tmp_path / "out").mkdir()
    headline = write_local_outputs(case, loaded, mask, tmp_path / "out", {"weights": "tiny"})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ct.lesions.csv", "ct.png", "ct.report.json"]
    assert json.loads((tmp_path / "out" / "ct.report.json").read_text())["suv"] is None
    assert headline["tmtv_ml"] == pytest.approx(lesion_report(loaded.pet, mask).tmtv_ml, abs=1e-4)


def _fail(*args, **kwargs):
    raise WriteError("disk full (simulated)")


def test_a_failure_in_the_middle_keeps_the_earlier_outputs_or_leaves_none_of_the_case(tmp_path, dicom_case,
                                                                                      monkeypatch):
    case, loaded, mask = dicom_case
    out = tmp_path / "out"
    out.mkdir()
    write_local_outputs(case, loaded, mask, out, MEMBERS)  # an earlier run's outputs
    (out / "other_case.report.json").write_text("{}")
    earlier = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(results.outputs, "write_seg", _fail)  # the last writer: CSV, JSON and PNG are made
    with pytest.raises(WriteError, match="simulated"):
        write_local_outputs(case, loaded, mask, out, MEMBERS)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier  # as they were; no staging folder either
    monkeypatch.undo()

    replaced = []
    real_replace = results.outputs.os.replace

    def replace_twice(source, target):  # the third rename into ``out`` fails: two files reached their names
        if Path(target).parent == out:
            if len(replaced) == 2:
                raise OSError(28, "No space left on device")
            replaced.append(target)
        real_replace(source, target)

    monkeypatch.setattr(results.outputs.os, "replace", replace_twice)
    with pytest.raises(WriteError, match=r"\.png: not written \(No space left on device\)"):
        write_local_outputs(case, loaded, mask, out, MEMBERS)
    # two files of this run had replaced the earlier ones: none of the case's stays (they would mix two runs)
    assert len(replaced) == 2 and [p.name for p in out.iterdir()] == ["other_case.report.json"]


def test_a_dicom_case_needs_the_seg_inputs(tmp_path, dicom_case):
    case, loaded, mask = dicom_case
    with pytest.raises(ValueError, match="weights_sha256"):
        write_local_outputs(case, loaded, mask, tmp_path, {"version": "1"})
    assert not any(tmp_path.glob("*.report.json"))


def test_a_manifest_row_whose_listing_fails_unforeseen_fails_alone(tmp_path, monkeypatch):
    """Issue 23 item 10: every failure of one study is contained, foreseen (InputError) or not."""
    real = studies.cases.path_case

    def failing(pet, ct, *args):
        if Path(pet).name == "bad":
            raise OverflowError("date value out of range")
        return real(pet, ct, *args)

    monkeypatch.setattr(studies.cases, "path_case", failing)
    (tmp_path / "a.mha").write_bytes(b"")
    (tmp_path / "b.mha").write_bytes(b"")
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("pet,ct\na.mha,a.mha\nbad,b.mha\n")
    good, bad = studies.cases.manifest_cases(manifest)
    assert good.name == "a" and bad.name == "b"  # named after its CT, as every case is
    with pytest.raises(InputError, match=r"bad: case failed \(OverflowError: date value out of range\)"):
        bad.load()


# --- issue 24 item 5: one naming rule, whichever way a study is given ---------------------------------------

def _names_every_way(tmp_path: Path, pet_path: Path, ct_path: Path) -> set[tuple[str, str]]:
    """(case name, mask suffix) of one study given as --pet/--ct and as a manifest row without a name."""
    manifest = tmp_path / f"{ct_path.name}.csv"
    manifest.write_text(f"pet,ct\n{pet_path},{ct_path}\n")
    given = [find_cases(InputRequest(pet=pet_path, ct=ct_path)), find_cases(InputRequest(manifest=manifest))]
    return {(case.name, case.mask_suffix) for (case,) in given}


def test_a_study_gets_one_name_however_it_is_given(tmp_path, phantom):
    pet, ct, _ = phantom.images()
    # The example: the grand-challenge layout names it after its CT (the challenge's rule) ...
    layout = tmp_path / "in"
    for role, name in (("pet", "sts001-pet.mha"), ("ct", "sts001-ct.mha")):
        (layout / "images" / role).mkdir(parents=True)
        sitk.WriteImage(pet if role == "pet" else ct, str(layout / "images" / role / name))
    (case,) = find_cases(InputRequest(input=layout))
    assert (case.name, case.mask_suffix) == ("sts001-ct", ".mha")
    # ... and so do --pet/--ct and a manifest row.
    assert _names_every_way(tmp_path, layout / "images/pet/sts001-pet.mha",
                            layout / "images/ct/sts001-ct.mha") == {("sts001-ct", ".mha")}
    # Variant: PET and CT in different formats: the mask's format follows the CT, as in the layout.
    sitk.WriteImage(pet, str(tmp_path / "lung7_suv.nii.gz"))
    sitk.WriteImage(ct, str(tmp_path / "lung7_ct.mha"))
    mixed = _names_every_way(tmp_path, tmp_path / "lung7_suv.nii.gz", tmp_path / "lung7_ct.mha")
    assert mixed == {("lung7_ct", ".mha")}
    # Variant: the autoPET release's fixed file names: named by the study's folders in every way.
    study = tmp_path / "release" / "PETCT_0af7" / "08-12-2005-NA-PET-CT Ganzkoerper"
    study.mkdir(parents=True)
    sitk.WriteImage(pet, str(study / "SUV.nii.gz"))
    sitk.WriteImage(ct, str(study / "CTres.nii.gz"))
    (release,) = find_cases(InputRequest(input=tmp_path / "release"))
    expected = ("PETCT_0af7_08-12-2005-NA-PET-CT_Ganzkoerper", ".nii.gz")
    assert (release.name, release.mask_suffix) == expected
    assert _names_every_way(tmp_path, study / "SUV.nii.gz", study / "CTres.nii.gz") == {expected}


def test_a_dicom_study_gets_one_name_however_it_is_given(tmp_path, phantom):
    write_phantom_study(tmp_path / "export" / "study", phantom, StudyIds(patient_id="P3"))
    (exported,) = find_cases(InputRequest(input=tmp_path / "export"))
    series = tmp_path / "export" / "study"
    assert _names_every_way(tmp_path, series / "PT", series / "CT") == {(exported.name, ".nii.gz")}
    assert exported.name.startswith("P3_")
    # A DICOM PET with a CT file: the CT file names it, as it would in the grand-challenge layout.
    sitk.WriteImage(phantom.images()[1], str(tmp_path / "p3_ct.nii.gz"))
    assert _names_every_way(tmp_path, series / "PT", tmp_path / "p3_ct.nii.gz") == {("p3_ct", ".nii.gz")}


def test_the_naming_rule_is_stated_in_help_and_readme(capsys):
    import process

    with pytest.raises(SystemExit):
        process.parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert f"Case names: {NAMING_RULE}." in shown
    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    assert "named after its CT" in readme and "the challenge's rule" in readme
