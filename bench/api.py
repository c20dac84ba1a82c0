"""The calls bench/ makes into model/'s case and cohort runners, one small helper each, so that a redesign of
runner/cohort.py, studies/cases.py or runner/pipeline.py is re-pointed here and nowhere else in bench/."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import SimpleITK as sitk

    from model import CaseTimings, Predictor
    from runner.cohort import CohortSummary


def run_one_case(pet_path: Path, ct_path: Path, out_path: Path | None, predictor: Predictor) -> CaseTimings:
    """One study through runner.pipeline.run_case (read, segment, write); seconds per stage."""
    from runner.pipeline import run_case

    return run_case(pet_path, ct_path, out_path, predictor, progress=False).timings


def segment_images(pet: sitk.Image, ct: sitk.Image, predictor: Predictor) -> None:
    """One study already in memory, nothing written (a warm-up)."""
    from runner.pipeline import run_images

    run_images(pet, ct, None, predictor, progress=False)


def folder_cases(inputs: Path) -> list:
    """The studies of an input folder in process.py's layouts (studies.cases.layout_cases)."""
    from studies.cases import layout_cases

    return layout_cases(inputs)


def run_folder(sources: list, predictor: Predictor, output: Path, *, read_ahead: bool = True) -> CohortSummary:
    """The masks of every study (grand-challenge mode: no reports) through runner.cohort.run_cohort."""
    from runner.cohort import CohortOptions, run_cohort

    return run_cohort(sources, predictor, output, CohortOptions(read_ahead=read_ahead, progress=False))


def masks_folder(output: Path) -> Path:
    """Where a cohort run writes its masks."""
    from results.outputs import OutputLayout

    return OutputLayout(output).masks


def read_masks(output: Path) -> dict[str, np.ndarray]:
    """Every mask a cohort run wrote, by file name."""
    import SimpleITK as sitk

    return {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted(masks_folder(output).glob("[!.]*"))}
