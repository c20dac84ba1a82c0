import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from model.preprocessing import MIN_BODY_PIXELS
from phantoms import PhantomSpec, make_phantom, write_dataset
from train.notices import TrainingWarning
from train.prepare import load_index, prepare

SPEC = PhantomSpec(size=64, spacing=9.0, slices=30, slice_thickness=33.0)


def test_prepare_checks_keeps_whole_slices_resumes_and_skips_bad_studies(tmp_path):
    rows = write_dataset(tmp_path / "src", 4, seed=2, spec=SPEC, negative_fraction=0.0)
    broken = tmp_path / "src" / rows[1]["File Location"] / "SUV.nii.gz"
    broken.write_bytes(broken.read_bytes()[:300])
    # One study's CT on another grid: it is resampled onto the PET grid, not skipped.
    ct_path = tmp_path / "src" / rows[2]["File Location"] / "CTres.nii.gz"
    ct = sitk.ReadImage(str(ct_path))
    ct.SetOrigin(tuple(np.array(ct.GetOrigin()) + (4.5, 0, 0)))
    sitk.WriteImage(ct, str(ct_path))

    summary = prepare(tmp_path / "src", "tcia", tmp_path / "data", workers=2)
    assert summary["prepared"] == 3 and summary["skipped"] == 1
    skipped = json.loads((tmp_path / "data/skipped.json").read_text())
    assert next(iter(skipped.values())).startswith(str(broken))
    index = load_index(tmp_path / "data")
    row = index[0]
    folder = tmp_path / "data/studies" / row["study"]
    pet, ct, mask = (np.load(folder / f"{n}.npy", mmap_mode="r") for n in ("pet", "ct", "mask"))
    # Lossless: float32 SUV, the phantom's whole-HU CT as int16; whole slices, the sources recorded.
    assert pet.dtype == np.float32 and ct.dtype == np.int16 and mask.dtype == np.uint8
    assert pet.shape == tuple(row["shape"]) == tuple(row["source_shape"]) and pet.shape[1:] == (64, 64)
    assert row["store_format"] == 2 and Path(row["source"]["pet"]).name == "SUV.nii.gz"
    shifted = next(r for r in index if Path(r["source"]["ct"]) == ct_path.resolve())
    assert np.load(tmp_path / "data/studies" / shifted["study"] / "ct.npy", mmap_mode="r").dtype == np.float32
    assert row["lesion_slices"] == np.flatnonzero(mask.any(axis=(1, 2))).tolist()
    assert row["diagnosis"] in {"MELANOMA", "LUNG_CANCER", "LYMPHOMA"}

    before = (folder / "meta.json").stat().st_mtime_ns
    broken.write_bytes((tmp_path / "src" / rows[0]["File Location"] / "SUV.nii.gz").read_bytes())
    again = prepare(tmp_path / "src", "tcia", tmp_path / "data")
    assert again["prepared"] == 4 and again["skipped"] == 0
    assert (folder / "meta.json").stat().st_mtime_ns == before  # finished studies are not redone


def test_nnunet_layout_reads_the_channel_order(tmp_path):
    from phantoms import make_phantom

    pet, ct, mask = make_phantom(1, True, SPEC).images()
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT", "1": "PET"},
                                                       "file_ending": ".nii.gz"}))
    sitk.WriteImage(ct, str(tmp_path / "imagesTr/case_001_0000.nii.gz"))
    sitk.WriteImage(pet, str(tmp_path / "imagesTr/case_001_0001.nii.gz"))
    sitk.WriteImage(mask, str(tmp_path / "labelsTr/case_001.nii.gz"))
    assert prepare(tmp_path, "nnunet", tmp_path / "data")["prepared"] == 1
    study = load_index(tmp_path / "data")[0]["study"]
    stored_pet = np.load(tmp_path / "data/studies" / study / "pet.npy")
    assert stored_pet.max() > 3  # the PET went into the PET slot


# The real releases' names: a TCIA study folder keeps its double space; one patient has two studies.
TCIA_STUDIES = [  # (Subject ID, study folder, diagnosis)
    ("PETCT_0011f3deaf", "03-23-2003-NA-PET-CT Ganzkoerper  primaer mit KM-10445", "LYMPHOMA"),
    ("PETCT_0410759456", "11-07-2002-NA-PET-CT Ganzkoerper  primaer mit KM-75415", "MELANOMA"),
    ("PETCT_0410759456", "05-14-2003-NA-PET-CT Ganzkoerper  primaer mit KM-22170", "MELANOMA"),
    ("PETCT_1285b86bea", "08-13-2005-NA-PET-CT Ganzkoerper  primaer mit KM-56435", "NEGATIVE"),
]
TCIA_COLUMNS = ["Series UID", "Collection", "3rd Party Analysis", "Data Description URI", "Subject ID", "Study UID",
                "Study Description", "Study Date", "Series Description", "Manufacturer", "Modality",
                "SOP Class Name", "SOP Class UID", "Number of Images", "File Size", "File Location",
                "Download Timestamp", "diagnosis", "age", "sex"]
SERIES = [("CT", "2.000000-CT IV Contrast-12345"), ("PT", "7.000000-PET corr.-19181"), ("SEG", "300.000000-SEG-67890")]


@pytest.fixture(scope="module")
def volumes():
    return make_phantom(1, True, SPEC).images()


def _write_study(folder, volumes, names=("SUV.nii.gz", "CTres.nii.gz", "SEG.nii.gz")):
    folder.mkdir(parents=True, exist_ok=True)
    for image, name in zip(volumes, names, strict=True):
        sitk.WriteImage(image, str(folder / name))


def _write_csv(path, columns, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _tcia_tree(root, volumes):
    rows = []
    for k, (subject, study, diagnosis) in enumerate(TCIA_STUDIES):
        _write_study(root / "FDG-PET-CT-Lesions" / subject / study, volumes)
        for modality, series in SERIES:  # the collection CSV has one row per series
            rows.append({**dict.fromkeys(TCIA_COLUMNS, ""), "Subject ID": subject, "Study UID": f"1.3.6.{k}",
                         "Collection": "FDG-PET-CT-Lesions", "Modality": modality, "diagnosis": diagnosis,
                         "age": "078Y", "sex": "M",
                         "File Location": f"./FDG-PET-CT-Lesions/{subject}/{study}/{series}"})
    return rows


def test_tcia_release_diagnoses_and_patients_from_the_collection_csv(tmp_path, volumes, capsys):
    rows = _tcia_tree(tmp_path / "src", volumes)
    _write_csv(tmp_path / "src" / "Clinical Metadata FDG PET_CT Lesions.csv", TCIA_COLUMNS, rows)
    summary = prepare(tmp_path / "src", "tcia", tmp_path / "data")
    assert summary["prepared"] == 4
    index = {(r["patient"], r["study"]): r for r in load_index(tmp_path / "data")}
    for subject, study, diagnosis in TCIA_STUDIES:
        row = next(r for (patient, sid), r in index.items() if patient == subject and sid.endswith(study[-8:]))
        assert row["diagnosis"] == diagnosis and row["tracer"] == "fdg"
    assert sum(patient == "PETCT_0410759456" for patient, _ in index) == 2
    table = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["MELANOMA", "2", "1"] in table and ["LYMPHOMA", "1", "1"] in table and ["all", "4", "3"] in table


def test_nifti_release_autopetmeta_by_study_location_given_with_metadata(tmp_path, volumes):
    _tcia_tree(tmp_path / "src", volumes)
    meta = [{"study_location": f"./FDG-PET-CT-Lesions/{subject}/{study}/", "diagnosis": diagnosis}
            for subject, study, diagnosis in TCIA_STUDIES]
    _write_csv(tmp_path / "autoPETmeta.csv", ["study_location", "diagnosis", "age", "sex"],
               [{**m, "age": "50", "sex": "F"} for m in meta])
    prepare(tmp_path / "src" / "FDG-PET-CT-Lesions", "tcia", tmp_path / "data", metadata=tmp_path / "autoPETmeta.csv")
    found = sorted(r["diagnosis"] for r in load_index(tmp_path / "data"))
    assert found == sorted(d for _, _, d in TCIA_STUDIES)


def test_mostly_unknown_diagnoses_are_warned_about(tmp_path, volumes):
    rows = _tcia_tree(tmp_path / "src", volumes)
    _write_csv(tmp_path / "src" / "meta.csv", TCIA_COLUMNS, rows[:3])  # the first study's series only
    with pytest.warns(TrainingWarning, match=r"3 of 4 studies \(75 %\) have no diagnosis"):
        prepare(tmp_path / "src", "tcia", tmp_path / "data")


def _nnunet_tree(root, volumes):
    """autoPET III: <tracer>_<patient>_<study>, _0000 the CT and _0001 the PET, metadata CSVs in the root."""
    cases = ["fdg_0011f3deaf_03-23-2003-NA-PET-CT Ganzkoerper  primaer mit KM-10445",
             "fdg_0011f3deaf_04-12-2004-NA-PET-CT Ganzkoerper  primaer mit KM-55018",
             "fdg_1285b86bea_08-13-2005-NA-PET-CT Ganzkoerper  primaer mit KM-56435",
             "psma_95b833d46f153cd2_2018-04-16", "psma_95b833d46f153cd2_2019-06-03"]
    pet, ct, mask = volumes
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT", "1": "PET"},
                                                   "labels": {"background": 0, "tumor": 1},
                                                   "file_ending": ".nii.gz"}))
    for case in cases:
        sitk.WriteImage(ct, str(root / "imagesTr" / f"{case}_0000.nii.gz"))
        sitk.WriteImage(pet, str(root / "imagesTr" / f"{case}_0001.nii.gz"))
        sitk.WriteImage(mask, str(root / "labelsTr" / f"{case}.nii.gz"))
    fdg = [{**dict.fromkeys(TCIA_COLUMNS, ""), "Subject ID": f"PETCT_{patient}", "diagnosis": diagnosis,
            "File Location": f"./FDG-PET-CT-Lesions/PETCT_{patient}/{study}/{series}"}
           for patient, study, diagnosis in [("0011f3deaf", cases[0][15:], "LYMPHOMA"),
                                             ("0011f3deaf", cases[1][15:], "LYMPHOMA"),
                                             ("1285b86bea", cases[2][15:], "NEGATIVE")]
           for _, series in SERIES]
    _write_csv(root / "fdg_metadata.csv", TCIA_COLUMNS, fdg)
    _write_csv(root / "psma_metadata.csv", ["Subject ID", "Study Date", "age", "pet_radionuclide"],
               [{"Subject ID": "PSMA_95b833d46f153cd2", "Study Date": date, "age": "071Y",
                 "pet_radionuclide": "18F"} for date in ("2018-04-16", "2019-06-03")])
    return cases


def test_autopet3_nnunet_names_group_patients_per_tracer_and_filter_by_tracer(tmp_path, volumes):
    cases = _nnunet_tree(tmp_path / "release", volumes)
    assert prepare(tmp_path / "release", "nnunet", tmp_path / "all")["prepared"] == 5
    index = load_index(tmp_path / "all")
    patients = {}
    for row in index:
        patients.setdefault(row["patient"], []).append(row)
    assert sorted(patients) == ["fdg_0011f3deaf", "fdg_1285b86bea", "psma_95b833d46f153cd2"]
    assert len(patients["fdg_0011f3deaf"]) == 2 and len(patients["psma_95b833d46f153cd2"]) == 2
    diagnoses = {patient: {r["diagnosis"] for r in rows} for patient, rows in patients.items()}
    assert diagnoses == {"fdg_0011f3deaf": {"LYMPHOMA"}, "fdg_1285b86bea": {"NEGATIVE"},
                         "psma_95b833d46f153cd2": {"PROSTATE_CANCER"}}
    assert {row["tracer"] for row in patients["psma_95b833d46f153cd2"]} == {"psma"}
    stored_pet = np.load(tmp_path / "all/studies" / index[0]["study"] / "pet.npy")
    assert stored_pet.max() > 3  # _0001 is the PET: it went into the PET slot

    assert prepare(tmp_path / "release", "nnunet", tmp_path / "fdg", tracer="fdg")["prepared"] == 3
    assert {row["tracer"] for row in load_index(tmp_path / "fdg")} == {"fdg"}
    assert len(cases) == 5 and not any(c.startswith("psma") for c in
                                       (r["study"] for r in load_index(tmp_path / "fdg")))


def test_slices_without_body_are_recorded(tmp_path):
    pet, ct, mask = make_phantom(2, True, SPEC).images()
    ct_array = sitk.GetArrayFromImage(ct)
    ct_array[:3] = -1024  # PET beyond the CT: air in CTres
    ct_array[3, :, :] = -1024
    ct_array[3, 30, 30 : 30 + MIN_BODY_PIXELS - 1] = 40  # a sliver, too small to count as body
    air = sitk.GetImageFromArray(ct_array)
    air.CopyInformation(ct)
    _write_study(tmp_path / "src" / "PETCT_aa" / "study", (pet, air, mask))
    prepare(tmp_path / "src", "tcia", tmp_path / "data")
    assert load_index(tmp_path / "data")[0]["bodyless_slices"] == [0, 1, 2, 3]


@pytest.mark.parametrize(("shift_mm", "spacing", "needle"), [
    ((300.0, 0.0, 0.0), None, "lies 300.0 mm off its PET's"),
    ((0.0, 0.0, 500.0), None, "lies 500.0 mm off its PET's"),
    ((0.0, 0.0, 0.0), 4.0, "box lies"),  # a label whose voxels are said to be smaller
])
def test_a_label_that_loses_its_lesions_on_the_pet_grid_is_a_skip(tmp_path, volumes, shift_mm, spacing, needle):
    pet, ct, seg = (sitk.Image(v) for v in volumes)
    assert sitk.GetArrayViewFromImage(seg).any()  # a positive study
    seg.SetOrigin(tuple(np.array(seg.GetOrigin()) + shift_mm))  # the label lies elsewhere
    if spacing is not None:  # the label's voxels said to be small: its lesions shrink to a corner of the PET
        seg.SetSpacing((spacing, spacing, seg.GetSpacing()[2]))
    _write_study(tmp_path / "src/P1/S1", (pet, ct, seg))
    _write_study(tmp_path / "src/P2/S1", volumes)  # a good one beside it
    summary = prepare(tmp_path / "src", "tcia", tmp_path / "data")
    assert summary["prepared"] == 1 and summary["skipped"] == 1
    skipped = json.loads((tmp_path / "data/skipped.json").read_text())
    assert list(skipped) == ["P1_S1"] and needle in skipped["P1_S1"]
    assert [row["study"] for row in load_index(tmp_path / "data")] == ["P2_S1"]
