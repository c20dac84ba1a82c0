import numpy as np
import pytest

from model.errors import InputError
from train.notices import TrainingWarning
from train.splits import make_splits


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


def _index(diagnoses: list[str]) -> list[dict]:
    return [{"study": f"s{p}", "patient": f"p{p}", "diagnosis": d} for p, d in enumerate(diagnoses)]


def test_diagnoses_with_fewer_patients_than_folds_are_pooled_with_a_warning():
    index = _index(["MELANOMA"] * 6 + ["LYMPHOMA"] * 2 + ["LUNG_CANCER"] * 2 + ["NEGATIVE"] * 6)
    with pytest.warns(TrainingWarning, match=r"LUNG_CANCER \(2\), LYMPHOMA \(2\).*as LUNG_CANCER\+LYMPHOMA"):
        folds = make_splits(index, folds=4)
    assert sorted(s for f in folds for s in f["val"]) == sorted(r["study"] for r in index)
    rare = {"s6", "s7", "s8", "s9"}
    assert all(len(rare & set(f["val"])) == 1 for f in folds)  # the pooled stratum is spread too


def test_six_studies_of_three_diagnoses_split_into_five_folds():
    index = _index(["MELANOMA", "MELANOMA", "LYMPHOMA", "NEGATIVE", "LUNG_CANCER", "NEGATIVE"])
    with pytest.warns(TrainingWarning):
        folds = make_splits(index, folds=5)
    assert len(folds) == 5 and all(f["val"] for f in folds)


def test_fewer_patients_than_folds_is_one_line_naming_folds():
    index = _index(["MELANOMA"] * 3) + [{"study": "s9", "patient": "p0", "diagnosis": "MELANOMA"}]
    with pytest.raises(InputError, match=r"^folds = 5 with 3 patients: set folds between 2 and 3"):
        make_splits(index, folds=5)
