"""The calls bench/ makes into the project's study and run paths, one small helper each, so that a redesign of
runner/run.py, runner/pipeline.py or studies/cases.py is re-pointed here and nowhere else in bench/. Every
study bench/ segments goes the one way a run takes it (runner.pipeline: read or given, checked, segmented)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import SimpleITK as sitk

    from model import CaseTimings, Predictor
    from runner.cohort import CohortSummary
    from runner.pipeline import CaseResult


def run_one_case(pet_path: Path, ct_path: Path, out_path: Path | None, predictor: Predictor) -> CaseTimings:
    """One study through runner.pipeline.run_case (read, check, segment, write); seconds per stage."""
    from runner.pipeline import run_case

    return run_case(pet_path, ct_path, out_path, predictor, progress=False).timings


def segment_images(pet: sitk.Image, ct: sitk.Image, predictor: Predictor) -> CaseResult:
    """One study already in memory, checked and segmented, nothing written: its mask and seconds per stage."""
    from runner.pipeline import run_images

    return run_images(pet, ct, None, predictor, progress=False)


def folder_cases(inputs: Path) -> list:
    """The studies of an input folder in process.py's layouts (studies.cases.layout_cases)."""
    from studies.cases import layout_cases

    return layout_cases(inputs)


def run_folder(inputs: Path, weights: Path, predictor: Predictor, output: Path, *,
               read_ahead: bool = True) -> CohortSummary:
    """A grand-challenge-mode run of the folder's studies (masks and results.json) through runner.run.run, as
    process.py makes it; ``predictor``: loaded from ``weights`` beforehand (kept warm across runs)."""
    from runner.run import RunSettings, run
    from studies.cases import InputRequest

    settings = RunSettings(request=InputRequest(input=inputs, grand_challenge=True), output=output, weights=weights,
                           inference=predictor.settings, reports=False, read_ahead=read_ahead, progress=False)
    return run(settings, predictor).summary


def masks_folder(output: Path) -> Path:
    """Where a cohort run writes its masks."""
    from results.outputs import OutputLayout

    return OutputLayout(output).masks


def read_masks(output: Path) -> dict[str, np.ndarray]:
    """Every mask a cohort run wrote, by file name."""
    import SimpleITK as sitk

    return {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted(masks_folder(output).glob("[!.]*"))}
