"""One case, read -> segment -> write, timed per stage: the one place process.py, bench/ and the DICOM path
turn a PET and a CT into a written mask."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from model.inference import CaseTimings, Predictor, lesion_volume_ml, segment
from model.readers import read_images, write_image_atomic


@dataclass
class CaseResult:
    """The mask of one case on the PET's grid, the PET it was made from, and where the seconds went."""

    mask: sitk.Image
    pet: sitk.Image
    timings: CaseTimings
    # Where the mask was written; None when the caller writes it in another format (DICOM SEG).
    out_path: Path | None

    @property
    def suv(self) -> np.ndarray:
        """The PET's (Z, Y, X) SUV values, a read-only view (no copy)."""
        return sitk.GetArrayViewFromImage(self.pet)

    @property
    def mask_array(self) -> np.ndarray:
        """The mask's (Z, Y, X) uint8 0/1 values, a read-only view (no copy)."""
        return sitk.GetArrayViewFromImage(self.mask)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel spacing in mm, (x, y, z) as SimpleITK orders it."""
        return tuple(self.mask.GetSpacing())

    @property
    def lesion_volume_ml(self) -> float:
        return lesion_volume_ml(self.mask)


def run_images(pet: sitk.Image, ct: sitk.Image, out_path: Path | None, predictor: Predictor, *,
               timings: CaseTimings | None = None, pet_name: str = "PET", ct_name: str = "CT",
               progress: bool | None = None) -> CaseResult:
    """Segment a PET and CT already read and write the mask atomically to ``out_path`` (unless None).

    ``timings`` carries what the caller spent before (reading); the names go into error messages.
    """
    timings = timings if timings is not None else CaseTimings()
    mask = segment(pet, ct, predictor, timings=timings, progress=progress, pet_name=pet_name, ct_name=ct_name)
    result = CaseResult(mask=mask, pet=pet, timings=timings, out_path=None)
    if out_path is not None:
        write_mask(result, Path(out_path))
    return result


def write_mask(result: CaseResult, out_path: Path) -> None:
    """Write a result's mask atomically (model.readers.write_image_atomic), timed; model.cohort calls it in
    its writer thread."""
    start = time.perf_counter()
    write_image_atomic(result.mask, Path(out_path))
    result.timings.write = time.perf_counter() - start
    result.out_path = Path(out_path)


def run_case(pet_path: Path, ct_path: Path, out_path: Path | None, predictor: Predictor, *,
             progress: bool | None = None) -> CaseResult:
    """Read a PET and CT file (together, InputError naming a bad one), segment them and write the mask."""
    timings = CaseTimings()
    start = time.perf_counter()
    pet, ct = read_images([(Path(pet_path), "PET", sitk.sitkUnknown), (Path(ct_path), "CT", sitk.sitkUnknown)])
    timings.read = time.perf_counter() - start
    return run_images(pet, ct, out_path, predictor, timings=timings, pet_name=str(pet_path), ct_name=str(ct_path),
                      progress=progress)
