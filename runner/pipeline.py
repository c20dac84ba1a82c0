"""The pipeline: one study from its source to its written outputs, the one path process.py (through
runner.run and runner.cohort), bench/ and the DICOM path all take, in three stages so that a scheduler can
put each on a thread of its own:

    read_study     read (CaseSource.load) -> plausibility checks (studies.checks) -> CT onto the PET's grid
    segment_study  orient/resample -> tile -> predict -> stitch -> threshold and small lesions
                   (model.inference.segment_on_pet_grid)
    write_study    the mask, then (with reports) the report files, through results.outputs' table

``segment_source`` (the first two) is the one way into inference for a study, with its checks: ``run_study``
adds the write, ``run_case`` (a study by its files, the mask to a path of the caller's) is it too, and
``run_images`` (a study already read) is it less the read. runner.cohort schedules the three stages for a
cohort (the read of the next study and the write of the last one beside the network) and adds nothing else
to a case. model.inference.segment is the network's part alone, without a study's checks: nothing that runs
a study calls it (tests/test_architecture.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from model.errors import WriteError, shown
from model.inference import (
    CaseTimings,
    Predictor,
    ct_on_pet_grid,
    lesion_volume_ml,
    segment_on_pet_grid,
)
from results.outputs import MASK_NOTE_KEY, CaseDocuments, OutputLayout, RunRecord, remove_stale, write_reports
from runner.interrupts import deferred
from studies.cases import CaseSource, LoadedCase, path_case
from studies.checks import check_study
from studies.readers import write_image_atomic


@dataclass(frozen=True)
class StudyOptions:
    """What a study's write stage writes beside its mask."""

    # Local mode: lesion CSV, report JSON, picture (and DICOM SEG) per case in reports/, and the headline
    # numbers in results.json. Off in grand-challenge mode, where nothing but masks and results.json is written.
    reports: bool = False
    # The reports' "model" block (results.outputs.model_info); needed with reports.
    model_info: dict | None = None
    # What makes the outputs (results.outputs.run_record): recorded in the mask's header and the report JSON, so
    # that --skip-existing can tell a case made with this run's settings. None: not recorded.
    record: RunRecord | None = None

    def __post_init__(self) -> None:
        if self.reports and self.model_info is None:
            raise ValueError("reports need model_info (results.outputs.model_info)")


@dataclass
class Study:
    """A case read and checked, its CT on the PET's grid: what the network stage takes."""

    case: CaseSource
    loaded: LoadedCase
    timings: CaseTimings


@dataclass
class CaseResult:
    """The mask of one study on the PET's grid, the study it was made from, and where the seconds went."""

    study: Study
    mask: sitk.Image
    # Where the mask was written; None until it is (or when the caller writes it in another format).
    out_path: Path | None = None

    @property
    def pet(self) -> sitk.Image:
        return self.study.loaded.pet

    @property
    def timings(self) -> CaseTimings:
        return self.study.timings

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


def checked_study(case: CaseSource, loaded: LoadedCase, predictor: Predictor,
                  timings: CaseTimings | None = None) -> Study:
    """A study already read, checked (studies.checks.check_study, with the body threshold of the weights that
    will run; non-finite voxels outside the body filled, with a warning) and its CT brought onto the PET's
    grid."""
    timings = timings if timings is not None else CaseTimings()
    start = time.perf_counter()
    loaded.pet, loaded.ct, notes = check_study(loaded.pet, loaded.ct, pet_name=case.pet_label,
                                               ct_name=case.ct_label, suv=loaded.suv,
                                               body_threshold_hu=predictor.config.normalisation.body_threshold_hu)
    if notes:  # non-finite voxels filled outside the body: said, and kept in results.json
        loaded.warnings = [*(loaded.warnings or []), *notes]
    loaded.ct = ct_on_pet_grid(loaded.pet, loaded.ct, predictor.settings, pet_name=case.pet_label,
                               ct_name=case.ct_label)
    timings.preprocess += time.perf_counter() - start
    return Study(case=case, loaded=loaded, timings=timings)


def read_study(case: CaseSource, predictor: Predictor) -> Study:
    """The first stage: read the case (InputError naming a bad file), check it, CT onto the PET's grid."""
    timings = CaseTimings()
    start = time.perf_counter()
    loaded = case.load()
    timings.read = time.perf_counter() - start
    return checked_study(case, loaded, predictor, timings)


def segment_study(study: Study, predictor: Predictor, *, progress: bool | None = None) -> CaseResult:
    """The network stage: the study's mask on its PET's grid (the per-slice progress bar: None in a terminal)."""
    mask = segment_on_pet_grid(study.loaded.pet, study.loaded.ct, predictor, timings=study.timings,
                               progress=progress)
    return CaseResult(study=study, mask=mask)


def write_mask(result: CaseResult, out_path: Path) -> None:
    """Write a result's mask atomically (studies.readers.write_image_atomic), timed."""
    start = time.perf_counter()
    write_image_atomic(result.mask, Path(out_path))
    result.timings.write = time.perf_counter() - start
    result.out_path = Path(out_path)


def write_study(result: CaseResult, layout: OutputLayout, options: StudyOptions) -> dict | None:
    """The last stage: the mask and (with reports) the report files; returns the headline numbers. The files of
    an earlier run of the case stay until this run's are complete: the reports are made first, then the mask
    is written, then the reports are renamed into place; a failure before the mask is in place leaves the
    earlier run's files as they were, one after it removes this run's mask and reports (they would mix two
    runs). Without reports, reports of an earlier run would contradict the new mask: removed first. A Ctrl-C
    in the main thread waits for the end of it (runner.interrupts): a case is written whole."""
    with deferred():
        return _write_outputs(result, layout, options)


def _write_outputs(result: CaseResult, layout: OutputLayout, options: StudyOptions) -> dict | None:
    case = result.study.case
    mask_path = layout.mask_path(case)
    if options.record is not None:
        result.mask.SetMetaData(MASK_NOTE_KEY, options.record.mask_note(case))
    if not options.reports:
        problems = remove_stale(list(layout.report_paths(case).values()))
        if problems:
            raise WriteError(f"{shown(case.name)}: reports of an earlier run would contradict the new mask{problems}")
        write_mask(result, mask_path)
        notes = result.study.loaded.warnings  # DICOM: files skipped, images not used; results.json keeps them
        return {"warnings": list(notes)} if notes else None
    start = time.perf_counter()
    documents = CaseDocuments(case=case, loaded=result.study.loaded, mask=result.mask, model_info=options.model_info,
                              record=options.record)
    try:
        headline = write_reports(documents, layout.reports, then=lambda: write_mask(result, mask_path))
    except Exception as error:
        if result.out_path is not None:  # this run's mask is in place, its reports are not
            problems = remove_stale([mask_path])
            if problems:
                raise WriteError(f"{error}{problems}") from None
        raise
    result.timings.write = time.perf_counter() - start  # the mask's write included
    return headline


def segment_source(case: CaseSource, predictor: Predictor, *, progress: bool | None = None) -> CaseResult:
    """The one way into inference for a study: read, checked, its CT onto the PET's grid (``read_study``), then
    segmented (``segment_study``); runner.cohort runs the same two stages on two threads."""
    return segment_study(read_study(case, predictor), predictor, progress=progress)


def run_study(case: CaseSource, predictor: Predictor, layout: OutputLayout, options: StudyOptions | None = None,
              *, progress: bool | None = None) -> tuple[CaseResult, dict | None]:
    """One study through every stage, in this thread: its result and its headline numbers (with reports).
    ``layout.reports`` must exist when ``options.reports`` (results.outputs.prepare_output makes it)."""
    result = segment_source(case, predictor, progress=progress)
    return result, write_study(result, layout, options or StudyOptions())


# --- one study by its images or files, mask to a path of the caller's (bench/, the Python API) -------------

def run_images(pet: sitk.Image, ct: sitk.Image, out_path: Path | None, predictor: Predictor, *,
               timings: CaseTimings | None = None, pet_name: str = "PET", ct_name: str = "CT",
               progress: bool | None = None) -> CaseResult:
    """Check and segment a PET and CT already read (``segment_source``'s stages less the read: ``checked_study``,
    ``segment_study``), and write the mask atomically to ``out_path`` (unless None). ``timings`` carries what
    the caller spent before (reading); the names go into error messages."""
    case = CaseSource(name="study", pet_label=pet_name, ct_label=ct_name, mask_suffix=".mha", is_dicom=False,
                      load=lambda: LoadedCase(pet=pet, ct=ct))
    result = segment_study(checked_study(case, LoadedCase(pet=pet, ct=ct), predictor, timings), predictor,
                           progress=progress)
    if out_path is not None:
        write_mask(result, Path(out_path))
    return result


def run_case(pet_path: Path, ct_path: Path, out_path: Path | None, predictor: Predictor, *,
             progress: bool | None = None) -> CaseResult:
    """One study given by its PET and CT (each an image file or a DICOM series folder, as ``--pet``/``--ct``):
    read, checked and segmented as process.py does, the mask written to ``out_path`` (unless None)."""
    result = segment_source(path_case(Path(pet_path), Path(ct_path)), predictor, progress=progress)
    if out_path is not None:
        write_mask(result, Path(out_path))
    return result
