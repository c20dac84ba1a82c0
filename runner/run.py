"""One run: a run's settings in; this part's and this rank's studies segmented and written, then results.json
and the review page. process.py parses its arguments into a RunSettings and calls ``run``; the Python API and
bench/ call it the same way, so that a run from Python writes what the command line writes.

Everything that can stop a run is checked before any study runs (the input as a whole, the output folder,
the weights): ``RunNotStarted`` then, and nothing written. A study that fails is one line and its entry in
results.json; the run goes on (``RunOutcome.failed``). A results.json that cannot be written is a WriteError.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

from model.checkpoint import cards_warning, model_cards
from model.devices import describe_precision
from model.errors import InputError, shown
from model.inference import InferenceConfig, Predictor
from results.outputs import OutputLayout, check_other_cases, model_info, prepare_output, run_record, write_results
from results.review_page import CohortPage, remove_page
from runner import interrupts
from runner.cohort import CohortOptions, CohortSummary, outcome_records, run_cohort
from runner.distributed import RankInfo, part_indices
from studies.cases import CaseSource, InputRequest, find_cases


@dataclass(frozen=True)
class RunSettings:
    """What a run is given (process.py's arguments, checked)."""

    # The studies: a folder, one PET and CT, or a manifest; grand-challenge mode reads /input's given layout.
    request: InputRequest
    # masks in OUT/images/..., reports in OUT/reports/, results.json (one file per part), OUT/index.html
    output: Path
    # a .safetensors checkpoint or a folder of them (an ensemble)
    weights: Path
    # how the network runs; under torchrun each rank's device is taken from ``inference.device``
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    # lesions.csv, report.json, the picture, the DICOM SEG and the review page: local mode only
    reports: bool = True
    # study i of the input is in part i mod num_parts (job arrays)
    num_parts: int = 1
    part_id: int = 0
    # a study whose outputs were made with this model and these settings is not redone
    skip_existing: bool = False
    # an output folder holding other inputs' masks or reports: kept (else refused)
    keep_other_cases: bool = False
    read_ahead: bool = True
    # the per-slice progress bar; None: in a terminal
    progress: bool | None = None

    def __post_init__(self) -> None:  # paths may be given as strings (the Python API)
        object.__setattr__(self, "output", Path(self.output))
        object.__setattr__(self, "weights", Path(self.weights))
        if self.reports and self.request.grand_challenge:
            raise InputError("reports: written in local mode only (grand-challenge's output is masks and results.json)")


class RunNotStarted(Exception):
    """Nothing ran and nothing was written: the input as a whole, the output folder, the weights or the torchrun
    environment cannot be used. Its text is the one line to show (the reason's)."""

    def __init__(self, reason: InputError | OSError):
        super().__init__(str(reason))
        self.reason = reason


@dataclass
class RunOutcome:
    summary: CohortSummary  # this process's studies: outcomes, timings
    results: Path  # results.json (or this part's)
    entries: list[dict] | None  # what results.json holds; None on a torchrun rank other than 0 (it writes none)
    failed: bool  # some study of the run failed (on any rank)


@dataclass
class _Started:
    """A run that passed every check: its studies, where they go, the predictor and the cohort's options."""

    sources: list[CaseSource]
    indices: list[int]
    results: Path
    predictor: Predictor
    options: CohortOptions
    rank: RankInfo | None


def run(settings: RunSettings, predictor: Predictor | None = None) -> RunOutcome:
    """Segment the studies of ``settings`` (this part's; under torchrun this rank's share), write their
    outputs, then (rank 0) results.json and the review page. ``predictor``: one loaded beforehand from
    ``settings.weights`` with ``settings.inference`` (bench/: one warm predictor for several runs); None: loaded
    here. RunNotStarted before any study runs; Ctrl-C (KeyboardInterrupt) after a write in progress is whole,
    with no results.json."""
    try:
        started = _start(settings, predictor)
    except (InputError, OSError) as error:
        raise RunNotStarted(error) from error
    try:
        summary = run_cohort([started.sources[i] for i in started.indices], started.predictor, settings.output,
                             started.options)
        records = outcome_records(summary, started.indices)
        if started.rank is not None:
            records = started.rank.gather(records)  # every rank waits here for the slowest
        failed = any(status == "failed" for _, status, _ in records)
        interrupts.raise_if_requested()  # an interrupted run writes no results.json
        entries = None
        if started.rank is None or started.rank.rank == 0:
            entries = [entry for _, _, entry in sorted(records, key=lambda record: record[0])]
            write_results(started.results, entries)
            if started.options.page is not None:  # after results.json: a part ending last finds the others' files
                started.options.page.write(entries)
        interrupts.raise_if_requested()
    finally:
        if started.rank is not None:
            started.rank.close()
    return RunOutcome(summary=summary, results=started.results, entries=entries, failed=failed)


def _start(settings: RunSettings, predictor: Predictor | None) -> _Started:
    """Every check before any study runs, each room visited once where it can be: the studies, this process's
    share of them and its device, the output folder, the weights (and the console's model lines), what the
    outputs record of them, the review page."""
    grand_challenge = settings.request.grand_challenge
    sources = find_cases(settings.request)
    rank = RankInfo.from_environment()
    indices = part_indices(len(sources), settings.num_parts, settings.part_id)
    inference = settings.inference
    if rank is not None:
        if predictor is not None:
            raise InputError("torchrun: each rank loads the weights onto its own device; give no predictor")
        indices = indices[rank.rank::rank.world]
        inference = dataclasses.replace(inference, device=rank.device(inference.device))
    elif predictor is not None and predictor.settings != inference:
        raise InputError("the predictor given runs with other settings than the run's (RunSettings.inference)")
    layout = OutputLayout(settings.output)
    results = layout.results(settings.num_parts, settings.part_id)
    prepare_output(layout, reports=settings.reports, results=results)
    if not grand_challenge:  # grand-challenge's /output is new for every job
        kept = check_other_cases(layout, sources, settings.keep_other_cases)
        if kept is not None:
            print(f"warning: {kept}", file=sys.stderr, flush=True)
    predictor = predictor or Predictor.from_path(settings.weights, inference)
    print(f"{shown(settings.weights)} on {describe_precision(predictor)}", flush=True)
    describe_weights(settings.weights)
    info = model_info(settings.weights, predictor) if settings.reports else None
    record = run_record(predictor, suv_method=settings.request.suv_method, weight_kg=settings.request.weight_kg)
    # OUT/index.html: local mode with reports; under torchrun rank 0 alone writes it.
    page = CohortPage(layout.root, info, settings.num_parts, settings.part_id) \
        if settings.reports and (rank is None or rank.rank == 0) else None
    if not grand_challenge and not settings.reports:
        remove_page(layout.root)
    options = CohortOptions(reports=settings.reports, model_info=info, read_ahead=settings.read_ahead,
                            skip_existing=settings.skip_existing, progress=settings.progress, page=page,
                            record=record)
    if rank is not None:
        rank.start_group()
    return _Started(sources=sources, indices=indices, results=results, predictor=predictor, options=options,
                    rank=rank)


def describe_weights(weights: Path) -> None:
    """The console's model line: which weights, what they are (their cards) and, on stderr, their warning (a
    demo model's "not for clinical or research use")."""
    cards = model_cards(weights)
    warning = cards_warning(cards)
    print(f"model card: {'; '.join(dict.fromkeys(card.summary() for card in cards.values()))}", flush=True)
    if warning:
        print(f"warning: {shown(weights)}: {warning}", file=sys.stderr, flush=True)
