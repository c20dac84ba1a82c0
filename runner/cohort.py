"""A run over many studies, scheduled: every entry point that segments a cohort (process.py in any mode,
bench/) hands its CaseSources to ``run_cohort``, which runs each through runner.pipeline's stages and adds
only the order they run in, skip-existing, and the one line per case.

Scheduling: one worker thread beside the main one. While the network runs on study i in the main thread
(``pipeline.segment_study``), the worker writes study i-1 (``pipeline.write_study``) and then reads study i+1
(``pipeline.read_study``). The read of i+1 queues behind the write of i-1, so at most two studies are in
memory. Any failure of one case (bad input, a failed write, no memory) is one line on stderr and its
results.json entry; the files an earlier run made for it are kept, and its entry says which run made them
(``kept_outputs``); the other cases go on.

The image readers capture file descriptor 2 while they read (studies/readers.py: ITK's complaints), for the
whole process: the main thread writes stderr only under that capture's lock (``readers.STDERR_LOCK``), and the
per-slice progress bar (stderr) runs only when nothing is read meanwhile (one study, or read-ahead off).

Many processes (``--num-parts``, torchrun ranks): runner/distributed.py says which studies are this
process's; ``outcome_records`` hands them back with their places in the whole run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import SimpleITK as sitk
import torch
from tqdm import tqdm

from model.errors import InputError, WriteError, describe, one_line, shown, warnings_about
from model.files import loads_strict
from model.inference import CaseTimings, Predictor
from results.outputs import (
    MASK_NOTE_KEY,
    OutputLayout,
    RunRecord,
    kept_outputs,
    mask_sha256,
    remove_leftovers,
    results_entry,
    run_record,
    study_report,
)
from results.report import headline_keys, rounded_headline
from results.review_page import CohortPage
from runner import pipeline
from runner.interrupts import deferred, raise_if_requested
from studies.cases import CaseSource
from studies.readers import STDERR_LOCK, read_grid, read_image


@dataclass(frozen=True)
class CohortOptions:
    # What each study writes beside its mask: pipeline.StudyOptions' two fields, which it checks.
    reports: bool = False
    model_info: Mapping | None = None
    # Read the next study and write the last one in a worker thread while the network runs.
    read_ahead: bool = True
    # A case whose outputs were made with this run's model and settings (``record``), and whose report agrees
    # with its mask, is not redone (``_already_done``).
    skip_existing: bool = False
    # The per-slice progress bar: None in a terminal. Never while a read runs beside it (see the module).
    progress: bool | None = None
    # OUT/index.html (local mode with reports), rewritten after every case; entries then carry the case's
    # name, slices and seconds for it (results.review_page).
    page: CohortPage | None = None
    # What makes this run's outputs (results.outputs.run_record); None: run_cohort takes the predictor's.
    record: RunRecord | None = None

    def __post_init__(self) -> None:
        _ = self.study  # refuses reports without model_info now, not at the first write

    @property
    def study(self) -> pipeline.StudyOptions:
        """What each study's write stage writes."""
        return pipeline.StudyOptions(reports=self.reports, model_info=self.model_info, record=self.record)


@dataclass
class CaseOutcome:
    index: int  # position in the sources given to run_cohort
    name: str
    status: Literal["written", "skipped", "failed"]
    entry: dict  # its results.json entry
    timings: CaseTimings | None = None  # a case written in this run


@dataclass
class CohortSummary:
    outcomes: list[CaseOutcome]
    wall_s: float

    @property
    def entries(self) -> list[dict]:
        return [outcome.entry for outcome in self.outcomes]

    def count(self, status: str) -> int:
        return sum(outcome.status == status for outcome in self.outcomes)

    @property
    def network_s(self) -> float:
        return sum(outcome.timings.network for outcome in self.outcomes if outcome.timings is not None)

    @property
    def outside_network(self) -> float:
        """Share of the run's wall time in which the network did not run (reading, checks, resampling,
        writing, reports, waiting)."""
        return 1.0 - self.network_s / self.wall_s if self.wall_s > 0 else 0.0


# --- skip-existing ----------------------------------------------------------------------------------------

@dataclass
class _Done:
    headline: dict | None  # computed again from its kept mask and its PET (local mode), for results.json


def _already_done(case: CaseSource, layout: OutputLayout, options: CohortOptions,
                  predictor: Predictor) -> _Done | str | None:
    """--skip-existing: a case's outputs are kept when its mask is one the checker passes (uint8, 0 and 1 only,
    on its PET's grid), made with this run's model identities and every setting that changes a mask or a
    number (the record in its header, results.outputs.run_record) and, with reports, its reports are all there,
    and its report JSON records the same settings, the digest of this very mask and the numbers this mask and
    this PET give (computed again here: results.json never carries a number this run did not compute).
    Returns _Done, why the case is redone, or None when it has no mask."""
    mask_path = layout.mask_path(case)
    if not mask_path.is_file():
        return None
    record = options.record
    if record is None or record.settings.get("models") is None:
        return "this run's model has no identity (networks not loaded from a checkpoint file)"
    study = None  # the study as the pipeline reads it, read once where the numbers are to be computed again
    try:
        mask = read_image(mask_path, "mask")
        if case.pet_path is None and options.reports:  # a DICOM PET's grid comes from its slices: read it whole once
            study = pipeline.read_study(case, predictor)
        pet = study.loaded.pet if study is not None else _pet_of(case)
    except InputError as error:
        return f"its mask or its PET cannot be read ({error})"
    if not _is_mask_of(mask, pet):
        return "its mask is not a 0/1 mask on its PET's grid"
    note = mask.GetMetaData(MASK_NOTE_KEY) if mask.HasMetaDataKey(MASK_NOTE_KEY) else None
    if note != record.mask_note(case):
        return _made_otherwise(case, layout, record, note)
    if not options.reports:
        return _Done(headline=None)
    return _reports_agree(case, layout, record, mask, lambda: study or pipeline.read_study(case, predictor))


def _pet_of(case: CaseSource) -> sitk.Image | sitk.ImageFileReader:
    """The case's PET grid to check a kept mask against: an image file's header only, a DICOM PET whole (its
    grid comes from its slices). InputError when it cannot be read."""
    if case.pet_path is None:
        return case.load().pet
    return read_grid(case.pet_path, "PET")


def _is_mask_of(mask: sitk.Image, pet: sitk.Image | sitk.ImageFileReader) -> bool:
    """uint8 holding 0 and 1 only, on the grid of the case's PET."""
    if mask.GetPixelID() != sitk.sitkUInt8 or not set(np.unique(sitk.GetArrayViewFromImage(mask)).tolist()) <= {0, 1}:
        return False
    return (tuple(mask.GetSize()) == tuple(pet.GetSize())
            and np.allclose(mask.GetSpacing(), pet.GetSpacing(), rtol=1e-6)
            and np.allclose(mask.GetOrigin(), pet.GetOrigin(), rtol=1e-6, atol=1e-4)
            and np.allclose(mask.GetDirection(), pet.GetDirection(), atol=1e-6))


def _made_otherwise(case: CaseSource, layout: OutputLayout, record: RunRecord, note: str | None) -> str:
    """Why a mask whose header records other settings is redone: what differs, where its report says."""
    if note is None:
        return "its mask records no settings (made by an earlier version, or not by this program)"
    earlier = None
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        made_by = loads_strict(layout.report_paths(case)["report"].read_text(encoding="utf-8"))["made_by"]
        if note.endswith(str(made_by["settings_sha256"])):
            earlier = made_by["settings"]
    if not isinstance(earlier, dict):
        return "its mask was made by another model or with other settings"
    return f"made with other settings ({record.differences(earlier, case)})"


def _reports_agree(case: CaseSource, layout: OutputLayout, record: RunRecord, mask: sitk.Image,
                   read_study: Callable[[], pipeline.Study]) -> _Done | str:
    """_already_done's part for the reports: all there, made with this run's settings, describing this mask,
    and holding the numbers this mask and this PET give."""
    paths = layout.report_paths(case)
    missing = [path.name for path in paths.values() if not path.is_file()]
    if missing:
        return f"{', '.join(shown(name) for name in missing)} missing"
    try:
        document = loads_strict(paths["report"].read_text(encoding="utf-8"))
        recorded = {key: document[key] for key in headline_keys()}
        settings_sha256, described = document["made_by"]["settings_sha256"], document["made_by"]["mask_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"its report cannot be read or records no run ({describe(error)})"
    if settings_sha256 != record.digest(case):
        return "its report was made with other settings than its mask"
    if described != mask_sha256(mask):
        return "its report describes another mask than the one there"
    try:  # the study as the pipeline reads it (PET in SUV, CT on its grid): the numbers are computed as they were
        loaded = read_study().loaded
        mask.CopyInformation(loaded.pet)  # equal within _is_mask_of's tolerance: the numbers were made on the PET's
        computed = rounded_headline(study_report(loaded, mask))
    except (InputError, ValueError) as error:
        return f"its numbers cannot be computed again ({error})"
    if computed != recorded:
        wrong = ", ".join(f"{key} {recorded[key]} in the report, {computed[key]} from the mask"
                          for key in headline_keys() if recorded[key] != computed[key])
        return f"its report's numbers are not its mask's ({wrong})"
    return _Done(headline=computed | {"slices": mask.GetSize()[2]})


# --- lines on the terminal --------------------------------------------------------------------------------

def print_error(message: str) -> None:
    """``error: <message>`` on stderr, never while a reader captures file descriptor 2 (see the module)."""
    with STDERR_LOCK:
        print(f"error: {one_line(message)}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _warnings_apart_from_reads() -> Iterator[None]:
    """Python warnings (torch's on the main thread) printed under the readers' lock too, not into a capture."""
    show = warnings.showwarning

    def show_apart(*args, **kwargs) -> None:
        with STDERR_LOCK:
            show(*args, **kwargs)

    warnings.showwarning = show_apart
    try:
        yield
    finally:
        warnings.showwarning = show


def _announce(outcome: CaseOutcome, total: int, result: _Segmented | None = None, eta_s: float | None = None) -> None:
    # A cohort's progress: cases done (one line each, in order) and, from the cases run so far, the time left.
    eta = "" if eta_s is None else f", ETA {tqdm.format_interval(eta_s)}"
    prefix = f"[{outcome.index + 1}/{total} done{eta}] " if total > 1 else ""
    if outcome.status == "failed":
        print_error(outcome.entry["error_messages"][0])
        if (kept := outcome.entry.get("kept_outputs")) is not None:
            print(f"{prefix}{shown(outcome.name)}: this run failed it; kept, from the run of {one_line(kept['run'])}: "
                  f"{', '.join(shown(name) for name in kept['files'])}", flush=True)
    elif outcome.status == "skipped":
        print(f"{prefix}{shown(outcome.name)}: already done (--skip-existing)", flush=True)
    elif result is not None:
        t = result.timings
        print(f"{prefix}{shown(outcome.name)}: {result.slices} slices, lesion volume {result.lesion_volume_ml:.2f} "
              f"ml, {t.total():.1f} s (read {t.read:.1f}, preprocess {t.preprocess:.1f}, network {t.network:.1f}, "
              f"postprocess {t.postprocess:.1f}, write {t.write:.1f})", flush=True)
    for note in outcome.entry.get("warnings", ()):  # e.g. a DICOM file skipped: said, not only in results.json
        with STDERR_LOCK:
            print(f"warning: {shown(outcome.name)}: {one_line(note)}", file=sys.stderr, flush=True)


def _first_network_call(predictor: Predictor) -> None:
    """One window through the network before any read runs beside it: libraries print their start-up notices
    (and torch.compile its messages) to stderr on the first call, which a read's capture would take for ITK's."""
    crop = predictor.config.crop_size
    predictor.predict_tiles(torch.zeros(1, 2, crop, crop, device=predictor.device))


def check_case_names(sources: Sequence[CaseSource]) -> None:
    """Two cases of one name would write each other's files."""
    seen: set[str] = set()
    for case in sources:
        if case.name in seen:
            raise InputError(f"two cases are named {shown(case.name)} ({case.pet_label}): their files would collide")
        seen.add(case.name)


# --- the schedule -----------------------------------------------------------------------------------------

@dataclass
class _Segmented:
    """A case past the network, its write stage queued (or done) in the worker."""

    index: int
    case: CaseSource
    write: Future
    timings: CaseTimings
    slices: int
    lesion_volume_ml: float


def _run_now(fn: Callable, *args) -> Future:
    """Run at once in this thread, the result or the exception kept as a worker thread's future keeps it."""
    future: Future = Future()
    try:
        future.set_result(fn(*args))
    except Exception as error:  # handed to whoever reads the future, as ThreadPoolExecutor does
        future.set_exception(error)
    return future


class _CohortRun:
    """The state of one ``run_cohort``: the worker thread, the outcomes so far, the review page."""

    def __init__(self, sources: Sequence[CaseSource], predictor: Predictor, layout: OutputLayout,
                 options: CohortOptions) -> None:
        self.sources, self.predictor, self.layout, self.options = sources, predictor, layout, options
        self.total = len(sources)
        self.concurrent = options.read_ahead and self.total > 1
        self.progress = False if self.concurrent else options.progress
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cohort-io") if self.concurrent else None
        self.submit = self.worker.submit if self.worker is not None else _run_now
        self.outcomes: list[CaseOutcome] = []
        self.page_failed = False
        self.redone: dict[str, str] = {}  # --skip-existing: case name -> why its kept outputs are not reused
        self.started = time.perf_counter()

    def prepare(self, case: CaseSource) -> pipeline.Study | _Done:
        """The worker's read of a case: already done (--skip-existing), or the pipeline's read stage."""
        with warnings_about(case.name):  # a library's warning names the case it is about
            if self.options.skip_existing:
                done = _already_done(case, self.layout, self.options, self.predictor)
                if isinstance(done, _Done):
                    return done
                if done is not None:
                    self.redone[case.name] = done  # said by the main thread, in the case's turn
            return pipeline.read_study(case, self.predictor)

    def write(self, result: pipeline.CaseResult) -> dict | None:
        """The worker's write of a case (the pipeline's write stage)."""
        with warnings_about(result.study.case.name):
            return pipeline.write_study(result, self.layout, self.options.study)

    def failed(self, index: int, case: CaseSource, error: Exception) -> CaseOutcome:
        """A failed case's outcome; the files an earlier run made for it stay (a read that failed for a moment
        must not destroy results), and its entry says which run made them."""
        message = str(error) if isinstance(error, (InputError, WriteError)) else \
            f"{case.ct_label}: case failed ({describe(error)})"
        entry = results_entry(case, None, None, one_line(message))
        kept = kept_outputs(self.layout, case)
        if kept is not None:
            entry["kept_outputs"] = kept
        return CaseOutcome(index=index, name=case.name, status="failed", entry=entry)

    def network(self, index: int, case: CaseSource, prepared_future: Future) -> CaseOutcome | _Segmented:
        """The main thread's part of a case; its study leaves this function only inside the write task."""
        try:
            prepared_future.exception()  # waits for the read; why a kept case is redone is known once it ran
            if case.name in self.redone:
                prefix = f"[{index + 1}/{self.total}] " if self.total > 1 else ""
                print(f"{prefix}{shown(case.name)}: redone (--skip-existing): {one_line(self.redone[case.name])}",
                      flush=True)
            prepared = prepared_future.result()
            if isinstance(prepared, _Done):
                return CaseOutcome(index=index, name=case.name, status="skipped",
                                   entry=results_entry(case, self.layout.mask_path(case), prepared.headline, None))
            with warnings_about(case.name):
                result = pipeline.segment_study(prepared, self.predictor, progress=self.progress)
        except Exception as error:  # every failure of one case is its line; the other cases go on
            return self.failed(index, case, error)
        return _Segmented(index=index, case=case,
                          write=self.submit(self.write, result),
                          timings=result.timings, slices=result.mask.GetSize()[2],
                          lesion_volume_ml=result.lesion_volume_ml)

    def finish(self, pending: _Segmented) -> None:
        try:
            headline = pending.write.result()
        except Exception as error:  # a failed write is its case's line; the others go on
            self.record(self.failed(pending.index, pending.case, error))
            return
        entry = results_entry(pending.case, self.layout.mask_path(pending.case), headline, None)
        if self.options.reports:
            entry["slices"] = pending.slices
        self.record(CaseOutcome(index=pending.index, name=pending.case.name, status="written", entry=entry,
                                timings=pending.timings), pending)

    def seconds_left(self) -> float | None:
        """The time the cases not done yet will take at the pace of the cases run so far (skipped ones aside:
        they take no time); None before any case ran."""
        ran = sum(outcome.status != "skipped" for outcome in self.outcomes)
        if not ran:
            return None
        return (time.perf_counter() - self.started) / ran * (self.total - len(self.outcomes))

    def record(self, outcome: CaseOutcome, written: _Segmented | None = None) -> None:
        self.outcomes.append(outcome)
        _announce(outcome, self.total, written, self.seconds_left())
        if self.options.reports:
            outcome.entry["case"] = outcome.name  # the page's row name (a failed case has no mask to name it)
        page = self.options.page
        if page is None or self.page_failed:
            return
        page.record(outcome.name, outcome.status, outcome.timings.total() if outcome.timings else None)
        try:
            page.write([o.entry for o in sorted(self.outcomes, key=lambda o: o.index)],
                       (len(self.outcomes), self.total))
        except WriteError:  # the page is a convenience: the cases go on; the final write (process.py) says why
            self.page_failed = True

    def run(self) -> None:
        """Read i+1 and write i-1 in the worker while the network runs on i; Ctrl-C (KeyboardInterrupt)
        propagates after a write in progress has finished, the read ahead dropped."""
        sources, total = self.sources, self.total
        pending: _Segmented | None = None
        next_prepare: Future | None = None
        try:
            next_prepare = self.submit(self.prepare, sources[0]) if sources else None
            ahead = self.worker is not None
            for index, case in enumerate(sources):
                raise_if_requested()  # a Ctrl-C whose raise was lost stops the run here
                prepared_future = next_prepare
                following = sources[index + 1] if index + 1 < total else None
                if ahead:  # queued behind the previous case's write: its study is gone before the next is read
                    next_prepare = self.submit(self.prepare, following) if following is not None else None
                step = self.network(index, case, prepared_future)
                del prepared_future
                if pending is not None:
                    self.finish(pending)
                    pending = None
                if isinstance(step, CaseOutcome):
                    self.record(step)
                else:
                    pending = step
                if not ahead:  # --no-read-ahead: this study written and gone before the next one is read
                    if pending is not None:
                        self.finish(pending)
                        pending = None
                    next_prepare = self.submit(self.prepare, following) if following is not None else None
            if pending is not None:
                self.finish(pending)
            raise_if_requested()
        except BaseException:
            if next_prepare is not None:
                next_prepare.cancel()  # a read not started yet; a write under way finishes (shutdown below)
            raise
        finally:
            if self.worker is not None:
                with deferred():  # a write under way ends whole, and no read holds stderr after this
                    self.worker.shutdown(wait=True)


def run_cohort(sources: Sequence[CaseSource], predictor: Predictor, output_dir: Path,
               options: CohortOptions | None = None) -> CohortSummary:
    """Segment every case through runner.pipeline, writing masks (and in local mode reports) into
    ``output_dir``'s OutputLayout; returns each case's outcome and results.json entry, in order. Prints one
    line per case (stdout; a failure on stderr) and, for several cases, a summary line. Ctrl-C
    (KeyboardInterrupt) propagates after a write in progress has finished; the read ahead is dropped."""
    options = options or CohortOptions()
    if options.record is None:
        options = dataclasses.replace(options, record=run_record(predictor))
    check_case_names(sources)
    layout = OutputLayout(Path(output_dir))
    remove_leftovers(layout, sources)
    if options.reports:
        layout.reports.mkdir(parents=True, exist_ok=True)  # results.outputs.write_reports stages its files inside
    cohort = _CohortRun(sources, predictor, layout, options)
    begin = time.perf_counter()
    if cohort.concurrent:
        _first_network_call(predictor)
    with _warnings_apart_from_reads():
        cohort.run()
    summary = CohortSummary(outcomes=cohort.outcomes, wall_s=time.perf_counter() - begin)
    if len(sources) > 1:
        print(f"{len(sources)} cases in {summary.wall_s:.1f} s: {summary.count('written')} written, "
              f"{summary.count('skipped')} already done, {summary.count('failed')} failed; network "
              f"{summary.network_s:.1f} s, {100 * summary.outside_network:.1f} % of the time outside it", flush=True)
    return summary


def outcome_records(summary: CohortSummary, indices: Sequence[int]) -> list[tuple[int, str, dict]]:
    """(index among all the run's studies, status, results.json entry) of each case of this process."""
    return [(indices[outcome.index], outcome.status, outcome.entry) for outcome in summary.outcomes]
