"""Folds grouped by patient (no patient in two folds) and stratified by diagnosis."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from model.errors import InputError
from model.files import atomic_write_json
from train.notices import warn


def strata(index: list[dict], folds: int) -> list[str]:
    """The stratum of each study: its diagnosis, where that diagnosis has at least ``folds`` patients.

    Rarer diagnoses cannot be spread over the folds; they are pooled into one stratum, and when the pool
    is still too small it joins the largest stratum (with one stratum left, the split is grouped only).
    """
    patients: dict[str, set[str]] = {}
    for row in index:
        patients.setdefault(row["diagnosis"], set()).add(row["patient"])
    rare = sorted(d for d, members in patients.items() if len(members) < folds)
    if not rare:
        return [row["diagnosis"] for row in index]
    common = sorted((d for d in patients if d not in rare), key=lambda d: (-len(patients[d]), d))
    pooled = set().union(*(patients[d] for d in rare))
    target = "+".join(rare) if len(pooled) >= folds or not common else common[0]
    counts = ", ".join(f"{d} ({len(patients[d])})" for d in rare)
    warn(f"diagnoses with fewer patients than folds ({folds}): {counts}; they are stratified together as "
         f"{target}")
    return [target if row["diagnosis"] in rare else row["diagnosis"] for row in index]


def make_splits(index: list[dict], folds: int = 5, seed: int = 0) -> list[dict[str, list[str]]]:
    """Per fold, the training and validation study ids."""
    studies = [row["study"] for row in index]
    patients = [row["patient"] for row in index]
    distinct = len(set(patients))
    if distinct < 2:
        raise InputError(f"folds: {distinct} patient(s) cannot make folds; cross-validation needs at least 2")
    if not 2 <= folds <= distinct:
        raise InputError(f"folds = {folds} with {distinct} patients: set folds between 2 and {distinct} "
                         "(--set folds=N for fit, --folds N for splits)")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    parts = list(splitter.split(np.zeros(len(studies)), strata(index, folds), patients))
    return [{"train": sorted(studies[i] for i in train), "val": sorted(studies[i] for i in val)}
            for train, val in parts]


def write_splits(index: list[dict], path: Path, folds: int = 5, seed: int = 0) -> list[dict[str, list[str]]]:
    splits = make_splits(index, folds, seed)
    atomic_write_json(path, {"seed": seed, "folds": splits}, indent=1)
    return splits


def read_fold(path: Path, fold: int) -> dict[str, list[str]]:
    if not path.is_file():
        raise InputError(f"{path}: splits file missing (run `python -m train splits`)")
    folds = json.loads(path.read_text())["folds"]
    if not 0 <= fold < len(folds):
        raise InputError(f"{path}: fold {fold} out of range 0..{len(folds) - 1}")
    return folds[fold]
