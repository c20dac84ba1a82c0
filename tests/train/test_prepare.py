import json

import numpy as np
import SimpleITK as sitk

from train.phantom import PhantomSpec, write_dataset
from train.prepare import load_index, prepare
from train.splits import make_splits

SPEC = PhantomSpec(size=64, spacing=9.0, slices=30, slice_thickness=33.0)


def test_prepare_checks_crops_resumes_and_skips_bad_studies(tmp_path):
    rows = write_dataset(tmp_path / "src", 4, seed=2, layout="tcia", spec=SPEC, negative_fraction=0.0)
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
    assert pet.dtype == np.float16 and ct.dtype == np.int16 and mask.dtype == np.uint8
    assert pet.shape == tuple(row["shape"]) and pet.shape[1] < 64  # cropped to the body
    assert row["lesion_slices"] == np.flatnonzero(mask.any(axis=(1, 2))).tolist()
    assert row["diagnosis"] in {"MELANOMA", "LUNG_CANCER", "LYMPHOMA"}

    before = (folder / "meta.json").stat().st_mtime_ns
    broken.write_bytes((tmp_path / "src" / rows[0]["File Location"] / "SUV.nii.gz").read_bytes())
    again = prepare(tmp_path / "src", "tcia", tmp_path / "data")
    assert again["prepared"] == 4 and again["skipped"] == 0
    assert (folder / "meta.json").stat().st_mtime_ns == before  # finished studies are not redone


def test_nnunet_layout_reads_the_channel_order(tmp_path):
    from train.phantom import make_phantom

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


def test_folds_are_grouped_by_patient_and_stratified():
    rng = np.random.default_rng(0)
    index = []
    for p in range(50):
        diagnosis = ["NEGATIVE", "MELANOMA", "LUNG_CANCER", "LYMPHOMA"][p % 4]
        for s in range(1 + (rng.random() < 0.3)):
            index.append({"study": f"p{p}s{s}", "patient": f"p{p}", "diagnosis": diagnosis})
    folds = make_splits(index)
    patient_of = {r["study"]: r["patient"] for r in index}
    val_patients = [{patient_of[s] for s in f["val"]} for f in folds]
    for k, fold in enumerate(folds):
        assert not {patient_of[s] for s in fold["train"]} & val_patients[k]
        diagnoses = {next(r["diagnosis"] for r in index if r["study"] == s) for s in fold["val"]}
        assert len(diagnoses) == 4
    assert sorted(s for f in folds for s in f["val"]) == sorted(r["study"] for r in index)
