"""Five folds grouped by patient (no patient in two folds) and stratified by diagnosis."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from model.errors import InputError
from model.files import atomic_write_bytes


def make_splits(index: list[dict], folds: int = 5, seed: int = 0) -> list[dict[str, list[str]]]:
    """Per fold, the training and validation study ids."""
    studies = [row["study"] for row in index]
    patients = [row["patient"] for row in index]
    if len(set(patients)) < folds:
        raise InputError(f"{len(set(patients))} patients cannot fill {folds} folds")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Small data sets have classes with fewer members than folds; the grouping still holds.
        warnings.filterwarnings("ignore", message="The least populated class")
        parts = list(splitter.split(np.zeros(len(studies)), [r["diagnosis"] for r in index], patients))
    return [{"train": sorted(studies[i] for i in train), "val": sorted(studies[i] for i in val)}
            for train, val in parts]


def write_splits(index: list[dict], path: Path, folds: int = 5, seed: int = 0) -> list[dict[str, list[str]]]:
    splits = make_splits(index, folds, seed)
    atomic_write_bytes(path, json.dumps({"seed": seed, "folds": splits}, indent=1).encode())
    return splits


def read_fold(path: Path, fold: int) -> dict[str, list[str]]:
    if not path.is_file():
        raise InputError(f"{path}: splits file missing (run `python -m train splits`)")
    folds = json.loads(path.read_text())["folds"]
    if not 0 <= fold < len(folds):
        raise InputError(f"{path}: fold {fold} out of range 0..{len(folds) - 1}")
    return folds[fold]
