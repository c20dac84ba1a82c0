"""``train prepare``: source studies to a compact store that training reads without decoding NIfTI.

Store layout (DATA/):
  studies/<study_id>/{pet.npy (float32 SUV), ct.npy (HU: int16 if whole, else float32), mask.npy (uint8),
                     meta.json}
  index.json   one row per prepared study: study, patient, tracer, diagnosis, slices, lesion_slices,
               bodyless_slices (fewer than MIN_BODY_PIXELS body pixels: never trained on), spacing, ...
  skipped.json every study that was skipped, and why
Every study is reoriented (permuted and flipped, model.geometry.reorient) to model.config's
DEFAULT_ORIENTATION, recorded per study as ``orientation``: training sees every slice the way inference will
show it to the network.
Each study keeps its whole slices (STORE_FORMAT 2), as the seed stored them: a training window is cut from
the same slice, with the same air, couch and PET background, as an inference window (train.data), so the
per-window statistics of the ``seed`` normalisation see what deployment sees. meta.json records the source
files (``source``), which fit's validation runs through the deployment pipeline. meta.json is written
last, so a study with a meta.json is complete and a rerun skips it (resumable). Patient, tracer and
diagnosis are looked up again on every run, so a metadata CSV given later reaches index.json.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from tqdm.auto import tqdm

from model.config import DEFAULT_ORIENTATION
from model.errors import InputError, one_line
from model.files import atomic_write_json, loads_strict
from model.geometry import (
    CT_FILL_HU,
    inplane_grid,
    needs_inplane_resampling,
    reorient,
    resample_onto,
    same_grid,
)
from model.preprocessing import NormalisationConfig, slices_with_body
from studies.readers import read_image
from train.layouts import TRACERS, SourceStudy, training_layout
from train.metadata import (
    diagnosis_table,
    metadata_csvs,
    read_metadata,
    warn_if_mostly_unknown,
)

# What a store holds: 2 = whole slices. Stores of format 1 (no field) were cut to the body's 3D box plus 8
# pixels; fit refuses them (train.fit.check_store_format): their windows were padded with fill values where
# deployment sees the slice's own background.
STORE_FORMAT = 2


def check_has_body(ct: np.ndarray, norm: NormalisationConfig) -> None:
    """A CT without any voxel above the body threshold is not a study to train on (InputError)."""
    if not (ct > norm.body_threshold_hu).any():
        raise InputError("no body found in the CT (no voxel above the body threshold)")


def prepare_study(study: SourceStudy, out: Path, spacing_mm: tuple[float, float] | None,
                  norm: NormalisationConfig) -> dict:
    """Check, reorient and resample one study into the store (whole slices); returns its index row."""
    pet = read_image(study.pet, "PET", sitk.sitkFloat32)
    ct = read_image(study.ct, "CT", sitk.sitkFloat32)
    mask = read_image(study.mask, "mask", sitk.sitkUInt8)
    label_ml = _lesion_ml(mask)
    if not same_grid(ct, pet):
        ct = resample_onto(ct, pet, CT_FILL_HU)
    mask = label_on_pet_grid(mask, pet, study.mask)
    # One grid, so one permutation for all three.
    pet, ct, mask = (reorient(image, DEFAULT_ORIENTATION) for image in (pet, ct, mask))
    if spacing_mm is not None and needs_inplane_resampling(pet, spacing_mm, tolerance=0.0):
        grid = inplane_grid(pet, spacing_mm)
        pet, ct = resample_onto(pet, grid, 0.0), resample_onto(ct, grid, CT_FILL_HU)
        mask = resample_onto(mask, grid, 0, sitk.sitkNearestNeighbor, sitk.sitkUInt8)
    check_label_kept(study, label_ml, _lesion_ml(mask))
    pet_a, ct_a, mask_a = (sitk.GetArrayViewFromImage(i) for i in (pet, ct, mask))
    if not np.isfinite(pet_a).all() or not np.isfinite(ct_a).all():
        raise InputError(f"{study.pet}: non-finite values in PET or CT")
    values = np.unique(mask_a)
    if not set(values.tolist()) <= {0, 1}:
        raise InputError(f"{study.mask}: mask values {values[:6].tolist()} are not 0/1")
    check_has_body(ct_a, norm)
    folder = out / "studies" / study.study_id
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "pet.npy", stored_pet(pet_a))
    ct_c = stored_ct(ct_a)
    np.save(folder / "ct.npy", ct_c)
    mask_c = np.ascontiguousarray(mask_a)
    np.save(folder / "mask.npy", mask_c)
    lesion_slices = np.flatnonzero(mask_c.any(axis=(1, 2))).tolist()
    row = {"study": study.study_id, "patient": study.patient, "tracer": study.tracer,
           "diagnosis": study.diagnosis, "slices": int(pet_a.shape[0]), "shape": list(mask_c.shape),
           "lesion_slices": lesion_slices, "bodyless_slices": bodyless_slices(ct_c, norm),
           "body_threshold_hu": norm.body_threshold_hu, "spacing": list(pet.GetSpacing()),
           "source_shape": list(pet_a.shape), "orientation": DEFAULT_ORIENTATION, "store_format": STORE_FORMAT,
           "source": {"pet": str(Path(study.pet).resolve()), "ct": str(Path(study.ct).resolve()),
                      "mask": str(Path(study.mask).resolve())}}
    atomic_write_json(folder / "meta.json", row, indent=None)
    return row


def stored_pet(pet: np.ndarray) -> np.ndarray:
    """The store's PET: float32 SUV, the values deployment reads (float16 moved a normalised input by up to
    0.005 on the phantoms of tests/train/test_data.py)."""
    return np.asarray(pet, dtype=np.float32)


def stored_ct(ct: np.ndarray) -> np.ndarray:
    """The store's CT, lossless: int16 where every value is a whole HU in its range (a CT straight from DICOM,
    the phantoms), else float32 (the autoPET release's CTres, resampled with linear interpolation). Rounding
    to whole HU moved the seed scheme's normalised input by up to 0.2: its statistics leave out voxels equal
    to the clip's floor, -1000, and rounding puts air voxels there or takes them away."""
    ct = np.asarray(ct, dtype=np.float32)
    if ct.size and -32768 <= ct.min() and ct.max() <= 32767 and np.array_equal(np.round(ct), ct):
        return ct.astype(np.int16)
    return ct


# A label resampled onto the PET's grid (nearest neighbour) keeps about its volume when it lies on the PET; one
# that lost more than this share of its lesion volume lies elsewhere (a SEG 300 mm off its PET stored as a
# negative study) or is on a grid too coarse for its lesions: that study is skipped, not stored wrong.
MAX_LABEL_LOSS = 0.1


def _corners(image: sitk.Image) -> np.ndarray:
    size = np.array(image.GetSize(), dtype=float)
    return np.array([image.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])
                     for corner in (-0.5 * np.ones(3), size - 0.5)])


def label_on_pet_grid(mask: sitk.Image, pet: sitk.Image, path: Path) -> sitk.Image:
    """The label ``mask`` (read from ``path``) on its PET's grid: itself, or resampled (nearest neighbour) when
    it covers the PET's box (check_label_box). Prepare stores it so; fit's validation scores against it."""
    if same_grid(mask, pet):
        return mask
    check_label_box(path, mask, pet)
    return resample_onto(mask, pet, 0, sitk.sitkNearestNeighbor, sitk.sitkUInt8)


def check_label_box(path: Path, mask: sitk.Image, pet: sitk.Image) -> None:
    """A label on another grid than its PET's must still cover the PET's box (within one PET voxel): a label
    moved inside the field of view keeps its voxels but puts them on the wrong anatomy."""
    off = float(np.abs(_corners(mask) - _corners(pet)).max())
    if off > max(pet.GetSpacing()):
        raise InputError(f"{path}: the label's box lies {off:.1f} mm off its PET's: the label does not lie on "
                         "its PET (origin, spacing or direction differ)")


def _lesion_ml(mask: sitk.Image) -> float:
    return float(np.count_nonzero(sitk.GetArrayViewFromImage(mask))) * float(np.prod(mask.GetSpacing())) / 1000.0


def check_label_kept(study: SourceStudy, label_ml: float, stored_ml: float) -> None:
    """Refuse a study whose label loses lesion voxels on the way to the PET's grid (InputError: skipped.json
    gives the reason)."""
    if label_ml > 0 and stored_ml < (1 - MAX_LABEL_LOSS) * label_ml:
        raise InputError(f"{study.mask}: its lesions ({label_ml:.2f} ml) keep {stored_ml:.2f} ml on the PET's grid: "
                         "the label does not lie on its PET (origin, spacing or direction differ)")


def bodyless_slices(ct: np.ndarray, norm: NormalisationConfig) -> list[int]:
    """Slices with fewer body pixels than model.preprocessing.MIN_BODY_PIXELS (inference skips them too)."""
    return np.flatnonzero(~slices_with_body(torch.from_numpy(np.array(ct)), norm).numpy()).tolist()


def _prepare_one(args: tuple) -> tuple[str, dict | None, str | None]:
    study, out, spacing, norm = args
    try:
        return study.study_id, prepare_study(study, out, spacing, norm), None
    except (InputError, RuntimeError, OSError, ValueError) as error:
        return study.study_id, None, str(error).splitlines()[0]


def iter_prepared(out: Path) -> Iterator[dict]:
    for meta in sorted((out / "studies").glob("*/meta.json")):
        yield loads_strict(meta.read_text())


def find_studies(source: Path, layout: str, tracer: str = "all", metadata: Path | None = None) -> list[SourceStudy]:
    """The studies of ``source`` (of one tracer, or all), with their diagnoses; prints studies per diagnosis."""
    if tracer != "all" and tracer not in TRACERS:
        raise InputError(f"--tracer {tracer}: expected one of {[*TRACERS, 'all']}")
    find = training_layout(layout, "find").find  # first: an unknown layout is refused before any reading
    diagnoses = read_metadata(metadata_csvs(source, metadata))
    studies = find(source, diagnoses)
    if tracer != "all":
        studies = [s for s in studies if s.tracer == tracer]
    if not studies:
        raise InputError(f"{source}: no studies found for layout {layout}" + (f" and tracer {tracer}"
                                                                               if tracer != "all" else ""))
    print(diagnosis_table((s.patient, s.diagnosis) for s in studies))
    warn_if_mostly_unknown([s.diagnosis for s in studies], diagnoses.sources)
    return studies


def prepare(source: Path, layout: str, out: Path, workers: int = 1, spacing_mm: tuple[float, float] | None = None,
            norm: NormalisationConfig | None = None, progress: bool | None = None, tracer: str = "all",
            metadata: Path | None = None) -> dict:
    """Prepare every study of ``source`` (of ``tracer``); returns counts. Corrupt or missing files skip that
    study only. index.json lists this run's studies, with patient, tracer and diagnosis as found now."""
    norm = norm or NormalisationConfig()
    studies = find_studies(source, layout, tracer, metadata)
    out.mkdir(parents=True, exist_ok=True)
    done = {row["study"] for row in iter_prepared(out)}
    todo = [s for s in studies if s.study_id not in done]
    skipped: dict[str, str] = {}
    jobs = [(s, out, spacing_mm, norm) for s in todo]
    bar = tqdm(total=len(studies), initial=len(studies) - len(todo), desc="prepare", unit="study",
               disable=None if progress is None else not progress)
    if workers > 1 and len(jobs) > 1:
        # spawn, not fork: a process that has run torch's thread pools before (a benchmark, a notebook) and
        # forks can deadlock in the children (bench.loader hung so after measuring its peaks).
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_prepare_one, job) for job in jobs]
            for future in as_completed(futures):
                study_id, _, reason = future.result()
                if reason:
                    skipped[study_id] = reason
                bar.update()
    else:
        for job in jobs:
            study_id, _, reason = _prepare_one(job)
            if reason:
                skipped[study_id] = reason
            bar.update()
    bar.close()
    current = {s.study_id: s for s in studies}
    rows = [{**row, "patient": current[row["study"]].patient, "tracer": current[row["study"]].tracer,
             "diagnosis": current[row["study"]].diagnosis}
            for row in iter_prepared(out) if row["study"] in current]
    atomic_write_json(out / "index.json", rows, indent=None)
    atomic_write_json(out / "skipped.json", skipped)
    for study_id, reason in sorted(skipped.items()):
        print(f"skipped {one_line(study_id)}: {one_line(reason)}")
    return {"studies": len(studies), "prepared": len(rows), "skipped": len(skipped),
            "workers": workers, "pid": os.getpid()}


def load_index(data: Path) -> list[dict]:
    path = Path(data) / "index.json"
    if not path.is_file():
        raise InputError(f"{path}: no prepared store here (run `python -m train prepare` first)")
    return loads_strict(path.read_text())
