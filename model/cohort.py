"""A run over many studies, scheduled: every entry point that segments a cohort (process.py in any mode,
bench/) hands its CaseSources to ``run_cohort``, which runs each through model.pipeline's stages and adds
only the order they run in, skip-existing, and the one line per case.

Scheduling: one worker thread beside the main one. While the network runs on study i in the main thread
(``pipeline.segment_study``), the worker writes study i-1 (``pipeline.write_study``) and then reads study i+1
(``pipeline.read_study``). The read of i+1 queues behind the write of i-1, so at most two studies are in
memory. Any failure of one case (bad input, a failed write, no memory) is one line on stderr and its
results.json entry, and leaves none of its files; the other cases go on.

The image readers capture file descriptor 2 while they read (model/readers.py: ITK's complaints), for the
whole process: the main thread writes stderr only under that capture's lock (``readers.STDERR_LOCK``), and the
per-slice progress bar (stderr) runs only when nothing is read meanwhile (one study, or read-ahead off).

Many processes (``--num-parts``, torchrun ranks): model/distributed.py says which studies are this
process's; ``outcome_records`` hands them back with their places in the whole run.
"""

from __future__ import annotations

import contextlib
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

from model import pipeline
from model.cases import CaseSource
from model.errors import InputError, WriteError, describe, one_line, shown
from model.files import loads_strict
from model.inference import CaseTimings, Predictor
from model.interrupts import deferred, raise_if_requested
from model.outputs import (  # noqa: F401  OUTPUT_SLUG and OutputLayout: re-exported for bench/ and train/
    OUTPUT_SLUG,
    OutputLayout,
    remove_leftovers,
    remove_stale,
    results_entry,
)
from model.readers import STDERR_LOCK, read_grid, read_image
from model.report import HEADLINE_KEYS
from model.review_page import CohortPage


@dataclass(frozen=True)
class CohortOptions:
    # What each study writes beside its mask: pipeline.StudyOptions' two fields, which it checks.
    reports: bool = False
    model_info: Mapping | None = None
    # Read the next study and write the last one in a worker thread while the network runs.
    read_ahead: bool = True
    # A case whose mask (and, with reports, whose reports) are there and readable is not redone.
    skip_existing: bool = False
    # The per-slice progress bar: None in a terminal. Never while a read runs beside it (see the module).
    progress: bool | None = None
    # OUT/index.html (local mode with reports), rewritten after every case; entries then carry the case's
    # name, slices and seconds for it (model.review_page).
    page: CohortPage | None = None

    def __post_init__(self) -> None:
        _ = self.study  # refuses reports without model_info now, not at the first write

    @property
    def study(self) -> pipeline.StudyOptions:
        """What each study's write stage writes."""
        return pipeline.StudyOptions(reports=self.reports, model_info=self.model_info)


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
    headline: dict | None  # from its report (local mode), for results.json


def _already_done(case: CaseSource, layout: OutputLayout, options: CohortOptions) -> _Done | None:
    """--skip-existing: the case's mask is one the checker passes (uint8, 0 and 1 only, on its PET's grid)
    and, with reports, its reports are all there and its report JSON holds the headline numbers. Anything
    less (a CT copied to the mask's name, a mask of another study): the case is redone."""
    mask_path = layout.mask_path(case)
    if not mask_path.is_file():
        return None
    try:
        mask = read_image(mask_path, "mask")
        if not _is_mask_of(mask, case):
            return None
        slices = mask.GetSize()[2]
    except InputError:
        return None
    if not options.reports:
        return _Done(headline=None)
    paths = layout.report_paths(case)
    if not all(path.is_file() for path in paths.values()):
        return None
    try:
        document = loads_strict(paths["report"].read_text())
        return _Done(headline={key: document[key] for key in HEADLINE_KEYS} | {"slices": slices})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_mask_of(mask: sitk.Image, case: CaseSource) -> bool:
    """uint8 holding 0 and 1 only, on the grid of the case's PET (from the PET file's header; a DICOM PET is
    read whole, which is still far cheaper than segmenting it). InputError when the PET cannot be read."""
    if mask.GetPixelID() != sitk.sitkUInt8 or not set(np.unique(sitk.GetArrayViewFromImage(mask)).tolist()) <= {0, 1}:
        return False
    pet = read_grid(case.pet_path, "PET") if case.pet_path is not None else case.load().pet
    return (tuple(mask.GetSize()) == tuple(pet.GetSize())
            and np.allclose(mask.GetSpacing(), pet.GetSpacing(), rtol=1e-6)
            and np.allclose(mask.GetOrigin(), pet.GetOrigin(), rtol=1e-6, atol=1e-4)
            and np.allclose(mask.GetDirection(), pet.GetDirection(), atol=1e-6))


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
        self.started = time.perf_counter()

    def prepare(self, case: CaseSource) -> pipeline.Study | _Done:
        """The worker's read of a case: already done (--skip-existing), or the pipeline's read stage."""
        if self.options.skip_existing and (done := _already_done(case, self.layout, self.options)) is not None:
            return done
        return pipeline.read_study(case, self.predictor)

    def failed(self, index: int, case: CaseSource, error: Exception) -> CaseOutcome:
        message = str(error) if isinstance(error, (InputError, WriteError)) else \
            f"{case.ct_label}: case failed ({describe(error)})"
        message += remove_stale([self.layout.mask_path(case), *self.layout.report_paths(case).values()])
        return CaseOutcome(index=index, name=case.name, status="failed",
                           entry=results_entry(case, None, None, one_line(message)))

    def network(self, index: int, case: CaseSource, prepared_future: Future) -> CaseOutcome | _Segmented:
        """The main thread's part of a case; its study leaves this function only inside the write task."""
        try:
            prepared = prepared_future.result()
            if isinstance(prepared, _Done):
                return CaseOutcome(index=index, name=case.name, status="skipped",
                                   entry=results_entry(case, self.layout.mask_path(case), prepared.headline, None))
            result = pipeline.segment_study(prepared, self.predictor, progress=self.progress)
        except Exception as error:  # every failure of one case is its line; the other cases go on
            return self.failed(index, case, error)
        return _Segmented(index=index, case=case,
                          write=self.submit(pipeline.write_study, result, self.layout, self.options.study),
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
    """Segment every case through model.pipeline, writing masks (and in local mode reports) into
    ``output_dir``'s OutputLayout; returns each case's outcome and results.json entry, in order. Prints one
    line per case (stdout; a failure on stderr) and, for several cases, a summary line. Ctrl-C
    (KeyboardInterrupt) propagates after a write in progress has finished; the read ahead is dropped."""
    options = options or CohortOptions()
    check_case_names(sources)
    layout = OutputLayout(Path(output_dir))
    remove_leftovers(layout, sources)
    if options.reports:
        layout.reports.mkdir(parents=True, exist_ok=True)  # model.outputs.write_reports stages its files inside
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
