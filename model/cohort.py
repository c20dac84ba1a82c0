"""A run over many studies: every entry point (process.py in any mode, bench/) turns a list of CaseSources into
masks, reports and results.json entries through ``run_cohort``.

Pipeline: one worker thread beside the main one. While the network runs on study i in the main thread, the
worker writes study i-1 (mask, then reports) and then reads study i+1 (load, plausibility checks, CT onto the
PET's grid). The read of i+1 queues behind the write of i-1, so at most two studies are in memory. Any failure
of one case (bad input, a failed write, no memory) is one line on stderr and its results.json entry, and
leaves none of its files; the other cases go on.

The image readers capture file descriptor 2 while they read (model/readers.py: ITK's complaints), for the
whole process: the main thread writes stderr only under that capture's lock, and the per-slice progress bar
(stderr) runs only when nothing is read meanwhile (one study, or read-ahead off).

Many processes: ``--num-parts N --part-id K`` gives part K study i with i mod N == K (nnU-Net's convention);
under torchrun each rank takes one GPU (LOCAL_RANK) or its share of the CPU cores and every WORLD_SIZE-th
study of its part, and rank 0 writes one results.json for all of them (``gather_records``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import sys
import tempfile
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

from model.cases import CaseSource, LoadedCase, output_paths, write_local_outputs
from model.checkpoint import find_checkpoints, read_config
from model.checks import check_study
from model.errors import InputError, WriteError, describe, one_line, shown
from model.files import atomic_write_json, loads_strict
from model.inference import CaseTimings, Predictor, ct_on_pet_grid
from model.readers import _STDERR_CAPTURE, image_format, read_grid, read_image, require_utf8_path
from model.review_page import CohortPage
from model.runner import CaseResult, run_images, write_mask

OUTPUT_SLUG = "automated-petct-lesion-segmentation"
# pyproject.toml's version (the container holds no pyproject.toml; tests/test_cohort.py keeps the two equal).
VERSION = "0.1.0"
# The headline numbers of a report (model.report.StudyReport.headline), read back for a case already done.
HEADLINE_KEYS = ("lesion_count", "tmtv_ml", "tlg", "suv_max", "dmax_mm")


@dataclass(frozen=True)
class OutputLayout:
    """Where a run writes: masks in images/automated-petct-lesion-segmentation (the grand-challenge contract,
    nothing else in it), reports (local mode) in reports/, results.json in the folder itself."""

    root: Path

    @property
    def masks(self) -> Path:
        return Path(self.root) / "images" / OUTPUT_SLUG

    @property
    def reports(self) -> Path:
        return Path(self.root) / "reports"

    def mask_path(self, case: CaseSource) -> Path:
        return self.masks / f"{case.name}{case.mask_suffix}"

    def results(self, num_parts: int = 1, part_id: int = 0) -> Path:
        """results.json; one file per part when the parts of a job array share the folder."""
        name = "results.json" if num_parts == 1 else f"results.part-{part_id}-of-{num_parts}.json"
        return Path(self.root) / name


def prepare_output(layout: OutputLayout, *, reports: bool, results: Path) -> None:
    """Make sure results can be written before any work is done: the output folders are folders (or can be
    made) and take a file, and the results file is not a folder. InputError otherwise."""
    require_utf8_path(layout.root, "output folder")
    folders = [layout.root, layout.root / "images", layout.masks] + ([layout.reports] if reports else [])
    for folder in folders:
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{shown(folder)}: output folder is a file")
    if results.is_dir():
        raise InputError(f"{shown(results)}: is a folder")
    for folder in folders[2:]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"{shown(folder)}: output folder cannot be made ({error.strerror})") from None
    for folder in [layout.root, *folders[2:]]:
        try:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
            os.close(fd)
            os.unlink(probe)
        except OSError as error:
            raise InputError(f"{shown(folder)}: output folder not writable ({error.strerror})") from None


def model_info(weights: Path, predictor: Predictor) -> dict:
    """The reports' "model" block: this code's version, each weights file with its SHA-256 (as its JSON records
    it; loading checked it) and how they run. The DICOM SEG names the version and the digests."""
    files = find_checkpoints(Path(weights))
    return {"version": VERSION, "weights_sha256": {path.name: read_config(path.with_suffix(".json"))[1]
                                                   for path in files},
            "ensemble": len(files), "encoder": predictor.config.encoder, "tta": predictor.settings.tta,
            "device": str(predictor.device), "precision": str(predictor.dtype).removeprefix("torch."),
            "min_lesion_ml": predictor.settings.min_lesion_ml}


@dataclass(frozen=True)
class CohortOptions:
    # Local mode: lesion CSV, report JSON, picture (and DICOM SEG) per case in reports/, and the headline
    # numbers in results.json. Off in grand-challenge mode, where nothing but masks and results.json is written.
    reports: bool = False
    # The reports' "model" block (``model_info``); needed with reports.
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
        if self.reports and self.model_info is None:
            raise ValueError("reports need model_info (model.cohort.model_info)")


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


@dataclass
class _Prepared:
    loaded: LoadedCase
    timings: CaseTimings


@dataclass
class _Done:
    headline: dict | None  # from its report (local mode), for results.json


@dataclass
class _Segmented:
    index: int
    case: CaseSource
    write: Future
    timings: CaseTimings
    slices: int
    lesion_volume_ml: float


def _file_entry(label: str) -> dict:
    found = image_format(label)
    if found is not None:
        return {"type": found.result_type, "filename": Path(label).name}
    return {"type": "dicom_series", "filename": label}


def _entry(case: CaseSource, mask: Path | None, headline: Mapping | None, error: str | None) -> dict:
    """A results.json entry in evalutils' form; local mode adds the headline numbers."""
    entry = {"inputs": [_file_entry(case.pet_label), _file_entry(case.ct_label)],
             "outputs": [] if mask is None else [_file_entry(mask.name)],
             "error_messages": [] if error is None else [error]}
    entry.update(headline or {})
    return entry


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
    paths = output_paths(case, layout.reports)
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


def _prepare(case: CaseSource, layout: OutputLayout, predictor: Predictor,
             options: CohortOptions) -> _Prepared | _Done:
    """Everything of a case before the network (the worker thread's part): read, check, CT onto the PET grid."""
    if options.skip_existing and (done := _already_done(case, layout, options)) is not None:
        return done
    timings = CaseTimings()
    start = time.perf_counter()
    loaded = case.load()
    timings.read = time.perf_counter() - start
    start = time.perf_counter()
    check_study(loaded.pet, loaded.ct, pet_name=case.pet_label, ct_name=case.ct_label)
    loaded.ct = ct_on_pet_grid(loaded.pet, loaded.ct, predictor.settings, pet_name=case.pet_label,
                               ct_name=case.ct_label)
    timings.preprocess = time.perf_counter() - start
    return _Prepared(loaded=loaded, timings=timings)


def _remove_stale(paths: Sequence[Path]) -> str:
    """Remove files of a case from an earlier run; what could not be removed, for its message."""
    problems = []
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            problems.append(f"; {shown(path.name)} from an earlier run could not be removed ({error.strerror})")
    return "".join(problems)


def _write(case: CaseSource, prepared: _Prepared, result: CaseResult, layout: OutputLayout,
           options: CohortOptions) -> dict | None:
    """The mask, then (local mode) the reports; returns the headline numbers. A failure is the caller's to
    clean up (``_failed``); without reports, reports of an earlier run would contradict the new mask: removed."""
    write_mask(result, layout.mask_path(case))
    report_paths = list(output_paths(case, layout.reports).values())
    if not options.reports:
        problems = _remove_stale(report_paths)
        if problems:
            raise WriteError(f"{shown(case.name)}: reports of an earlier run would contradict the new mask{problems}")
        return None
    start = time.perf_counter()
    headline = write_local_outputs(case, prepared.loaded, result.mask, layout.reports, options.model_info)
    result.timings.write += time.perf_counter() - start
    return headline


def _failed(index: int, case: CaseSource, layout: OutputLayout, error: Exception) -> CaseOutcome:
    message = str(error) if isinstance(error, (InputError, WriteError)) else \
        f"{case.ct_label}: case failed ({describe(error)})"
    message += _remove_stale([layout.mask_path(case), *output_paths(case, layout.reports).values()])
    return CaseOutcome(index=index, name=case.name, status="failed",
                       entry=_entry(case, None, None, one_line(message)))


def _run_now(fn: Callable, *args) -> Future:
    """Run at once in this thread, the result or the exception kept as a worker thread's future keeps it."""
    future: Future = Future()
    try:
        future.set_result(fn(*args))
    except Exception as error:  # handed to whoever reads the future, as ThreadPoolExecutor does
        future.set_exception(error)
    return future


def print_error(message: str) -> None:
    """``error: <message>`` on stderr, never while a reader captures file descriptor 2 (see the module)."""
    with _STDERR_CAPTURE:
        print(f"error: {one_line(message)}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _warnings_apart_from_reads() -> Iterator[None]:
    """Python warnings (torch's on the main thread) printed under the readers' lock too, not into a capture."""
    show = warnings.showwarning

    def show_apart(*args, **kwargs) -> None:
        with _STDERR_CAPTURE:
            show(*args, **kwargs)

    warnings.showwarning = show_apart
    try:
        yield
    finally:
        warnings.showwarning = show


def _first_network_call(predictor: Predictor) -> None:
    """One window through the network before any read runs beside it: libraries print their start-up notices
    (and torch.compile its messages) to stderr on the first call, which a read's capture would take for ITK's."""
    crop = predictor.config.crop_size
    predictor.predict_tiles(torch.zeros(1, 2, crop, crop, device=predictor.device))


def _announce(outcome: CaseOutcome, total: int) -> None:
    prefix = f"[{outcome.index + 1}/{total}] " if total > 1 else ""
    if outcome.status == "failed":
        print_error(outcome.entry["error_messages"][0])
    elif outcome.status == "skipped":
        print(f"{prefix}{shown(outcome.name)}: already done (--skip-existing)", flush=True)


# tempfile's random part of a name (mkstemp, mkdtemp): 8 of these characters.
_TEMPORARY = re.compile(r"\.[a-z0-9_]{8}")


def _final_name(entry: str, suffix: str) -> str | None:
    """The name whose temporary ``entry`` is, when it is ``.<name>.<8 random characters><suffix>``."""
    if not (entry.startswith(".") and entry.endswith(suffix)):
        return None
    core = entry[1:len(entry) - len(suffix)]
    return core[:-9] if len(core) > 9 and _TEMPORARY.fullmatch(core[-9:]) else None


def remove_leftovers(layout: OutputLayout, sources: Sequence[CaseSource]) -> None:
    """Temporary masks (model.readers.write_image_atomic) and report staging folders
    (model.cases.write_local_outputs) of these cases that a killed run (SIGKILL, a lost node) left behind, so
    that a continued run leaves the folders as clean as an uninterrupted one. Only this run's cases: other
    parts may be writing into the same folders."""
    masks = {layout.mask_path(case).name for case in sources}
    names = {case.name for case in sources}
    suffixes = {"".join(Path(mask).suffixes) for mask in masks}  # what write_image_atomic ends its temporaries with
    leftovers = []
    for folder in (layout.masks, layout.reports):
        try:
            entries = [entry for entry in os.scandir(folder) if entry.name.startswith(".")]
        except FileNotFoundError:
            continue
        for entry in entries:
            if folder == layout.reports:
                found = _final_name(entry.name, "") in names
            else:
                found = any((final := _final_name(entry.name, suffix)) in masks
                            and "".join(Path(final).suffixes) == suffix for suffix in suffixes)
            if found:
                leftovers.append(entry)
    for entry in leftovers:
        with contextlib.suppress(OSError):  # hidden and harmless where it cannot be removed
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


def check_case_names(sources: Sequence[CaseSource]) -> None:
    """Two cases of one name would write each other's files."""
    seen: set[str] = set()
    for case in sources:
        if case.name in seen:
            raise InputError(f"two cases are named {shown(case.name)} ({case.pet_label}): their files would collide")
        seen.add(case.name)


def run_cohort(sources: Sequence[CaseSource], predictor: Predictor, output_dir: Path,
               options: CohortOptions | None = None) -> CohortSummary:
    """Segment every case, writing masks (and in local mode reports) into ``output_dir``'s OutputLayout;
    returns each case's outcome and results.json entry, in order. Prints one line per case (stdout; a failure
    on stderr) and, for several cases, a summary line. Ctrl-C (KeyboardInterrupt) propagates after a write in
    progress has finished; the read ahead is dropped."""
    options = options or CohortOptions()
    check_case_names(sources)
    layout = OutputLayout(Path(output_dir))
    remove_leftovers(layout, sources)
    if options.reports:
        layout.reports.mkdir(parents=True, exist_ok=True)  # write_local_outputs stages its files inside
    total = len(sources)
    concurrent = options.read_ahead and total > 1
    progress = False if concurrent else options.progress
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cohort-io") if concurrent else None
    submit = worker.submit if worker is not None else _run_now
    outcomes: list[CaseOutcome] = []
    begin = time.perf_counter()
    page_failed = False

    def record(outcome: CaseOutcome) -> None:
        nonlocal page_failed
        outcomes.append(outcome)
        _announce(outcome, total)
        if options.reports:
            outcome.entry["case"] = outcome.name  # the page's row name (a failed case has no mask to name it)
        if options.page is None or page_failed:
            return
        options.page.record(outcome.name, outcome.status, outcome.timings.total() if outcome.timings else None)
        try:
            options.page.write([o.entry for o in sorted(outcomes, key=lambda o: o.index)], (len(outcomes), total))
        except WriteError:  # the page is a convenience: the cases go on; the final write (process.py) says why
            page_failed = True

    def finish(pending: _Segmented) -> None:
        try:
            headline = pending.write.result()
        except Exception as error:  # a failed write is its case's line; the others go on
            outcome = _failed(pending.index, pending.case, layout, error)
        else:
            outcome = CaseOutcome(index=pending.index, name=pending.case.name, status="written",
                                  entry=_entry(pending.case, layout.mask_path(pending.case), headline, None),
                                  timings=pending.timings)
            t = pending.timings
            if options.reports:
                outcome.entry["slices"] = pending.slices
            prefix = f"[{pending.index + 1}/{total}] " if total > 1 else ""
            print(f"{prefix}{shown(pending.case.name)}: {pending.slices} slices, lesion volume "
                  f"{pending.lesion_volume_ml:.2f} ml, {t.total():.1f} s (read {t.read:.1f}, preprocess "
                  f"{t.preprocess:.1f}, network {t.network:.1f}, postprocess {t.postprocess:.1f}, write "
                  f"{t.write:.1f})", flush=True)
        record(outcome)

    def network(index: int, case: CaseSource, prepared_future: Future) -> CaseOutcome | _Segmented:
        """The main thread's part of a case; its study leaves this function only inside the write task."""
        try:
            prepared = prepared_future.result()
            if isinstance(prepared, _Done):
                return CaseOutcome(index=index, name=case.name, status="skipped",
                                   entry=_entry(case, layout.mask_path(case), prepared.headline, None))
            loaded = prepared.loaded
            result = run_images(loaded.pet, loaded.ct, None, predictor, timings=prepared.timings,
                                pet_name=case.pet_label, ct_name=case.ct_label, progress=progress)
        except Exception as error:  # every failure of one case is its line; the other cases go on
            return _failed(index, case, layout, error)
        return _Segmented(index=index, case=case, write=submit(_write, case, prepared, result, layout, options),
                          timings=result.timings, slices=result.mask.GetSize()[2],
                          lesion_volume_ml=result.lesion_volume_ml)

    if concurrent:
        _first_network_call(predictor)
    pending: _Segmented | None = None
    next_prepare: Future | None = None
    with _warnings_apart_from_reads():
        try:
            next_prepare = submit(_prepare, sources[0], layout, predictor, options) if sources else None
            for index, case in enumerate(sources):
                prepared_future = next_prepare
                # Queued behind the previous case's write: its study is gone before the next one is read.
                next_prepare = submit(_prepare, sources[index + 1], layout, predictor, options) \
                    if index + 1 < total else None
                step = network(index, case, prepared_future)
                del prepared_future
                if pending is not None:
                    finish(pending)
                    pending = None
                if isinstance(step, CaseOutcome):
                    record(step)
                else:
                    pending = step
            if pending is not None:
                finish(pending)
        except BaseException:
            if next_prepare is not None:
                next_prepare.cancel()  # a read not started yet; a write under way finishes (shutdown below)
            raise
        finally:
            if worker is not None:
                worker.shutdown(wait=True)
    summary = CohortSummary(outcomes=outcomes, wall_s=time.perf_counter() - begin)
    if total > 1:
        print(f"{total} cases in {summary.wall_s:.1f} s: {summary.count('written')} written, "
              f"{summary.count('skipped')} already done, {summary.count('failed')} failed; network "
              f"{summary.network_s:.1f} s, {100 * summary.outside_network:.1f} % of the time outside it", flush=True)
    return summary


def write_results(path: Path, entries: list[dict]) -> None:
    """results.json (evalutils' list of case entries), whole or not at all (WriteError); a temporary of it
    that a killed run left (model.files.atomic_target) is removed."""
    path = Path(path)
    for entry in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
        if _final_name(entry.name, ".part") == path.name:
            with contextlib.suppress(OSError):  # hidden and harmless where it cannot be removed
                entry.unlink()
    atomic_write_json(path, entries)  # strict JSON: a NaN raises rather than reach the file


# --- parts and torchrun: model/distributed.py ------------------------------------------------------------

def outcome_records(summary: CohortSummary, indices: Sequence[int]) -> list[tuple[int, str, dict]]:
    """(index among all the run's studies, status, results.json entry) of each case of this process."""
    return [(indices[outcome.index], outcome.status, outcome.entry) for outcome in summary.outcomes]

