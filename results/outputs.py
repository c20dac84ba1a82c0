"""What a run writes and where: the output folder's layout, the table of a case's outputs (mask, lesion CSV,
report JSON, picture, DICOM SEG: each entry its file name, whether a case gets it and how it is written),
results.json and its entries, the reports' model block, and the clean-up of files a failed case or a killed
run left behind. runner.pipeline writes a case's outputs through the table; runner.cohort schedules it.

A new output is one entry of ``OUTPUTS``: everything else (skip-existing, the files a failed case keeps, the
staging of reports, the temporaries a killed run left) walks the table.

What made a case's outputs (``RunRecord``): every setting of the run that changes a mask or a number, its
digest in the mask's header (``MASK_NOTE_KEY``) and, with the run's start and the mask's own digest, in the
report JSON's ``made_by``: --skip-existing reuses a case only when they are this run's (runner.cohort).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk

from model.checkpoint import cards_warning, find_checkpoints, model_cards, read_config
from model.errors import InputError, WriteError, shown, warnings_about
from model.files import atomic_write_json, loads_strict
from results.figures import case_figure
from results.report import body_volume_ml, lesion_report, rounded_headline, write_lesions_csv, write_report_json
from results.seg import write_seg
from studies.cases import CaseSource, LoadedCase
from studies.readers import image_format, require_utf8_path
from studies.suv import DEFAULT_SUV_METHOD

OUTPUT_SLUG = "automated-petct-lesion-segmentation"
# pyproject.toml's version (the container holds no pyproject.toml; tests/runner/test_cohort.py keeps the two equal).
VERSION = "0.1.0"
# The mask header's free-text field (MetaImage key; NIfTI's 80-byte descrip) that records what made the mask.
MASK_NOTE_KEY = "ITK_FileNotes"
MASK_NOTE_PREFIX = "autopet "  # with the 64-digit digest, 72 characters: NIfTI takes 79


def _digest(document: Any) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
                          ).hexdigest()


def mask_sha256(mask: sitk.Image) -> str:
    """The digest of a mask's voxels (and size): what a report names as the mask it describes."""
    digest = hashlib.sha256(repr(tuple(mask.GetSize())).encode())
    digest.update(np.ascontiguousarray(sitk.GetArrayViewFromImage(mask)).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class RunRecord:
    """What a run makes its outputs with (``run_record``): ``settings``, every setting that changes a mask or
    a report's number, for every case; ``dicom``, those that change a DICOM study's SUV; ``started``, the run's
    start (UTC), which names the run that made a case's files."""

    settings: Mapping[str, Any]
    dicom: Mapping[str, Any]
    started: str

    def case_settings(self, case: CaseSource) -> dict:
        return {**self.settings, **({"dicom": dict(self.dicom)} if case.is_dicom else {})}

    def digest(self, case: CaseSource) -> str:
        return _digest(self.case_settings(case))

    def mask_note(self, case: CaseSource) -> str:
        """The mask header's record (deterministic: the same settings write the same mask file)."""
        return MASK_NOTE_PREFIX + self.digest(case)

    def differences(self, earlier: Mapping, case: CaseSource) -> str:
        """What differs between the settings an earlier run recorded and this run's, for a line."""
        now = self.case_settings(case)

        def models(value: object) -> str:
            return ", ".join(f"{name} {str(digest)[:12]}" for name, digest in value.items()) \
                if isinstance(value, dict) else str(value)

        changed = [f"model {models(earlier.get(key))} -> {models(now.get(key))}" if key == "models"
                   else f"{key} {earlier.get(key)} -> {now.get(key)}"
                   for key in sorted(set(earlier) | set(now), key=str) if earlier.get(key) != now.get(key)]
        return "; ".join(changed) or "recorded otherwise"

    def made_by(self, case: CaseSource, mask: sitk.Image) -> dict:
        """The report JSON's ``made_by``: the run, its settings and their digest, and the mask described."""
        return {"run": self.started, "settings": self.case_settings(case), "settings_sha256": self.digest(case),
                "mask_sha256": mask_sha256(mask)}


def run_record(predictor, *, suv_method: str | None = None, weight_kg: float | None = None) -> RunRecord:
    """The RunRecord of a run of ``predictor`` (a model.inference.Predictor). In it: each model's identity
    (model.checkpoint.model_sha256: config as read and weights; None for networks not loaded from files, which
    no later run can match), the precision (fp16 and bf16 move probabilities near the threshold by up to about
    0.013, so masks differ by a few voxels), flip TTA, the smallest lesion kept, the tiling and resampling
    settings; for DICOM studies the SUV method and a given body weight. Not in it: the device, the batch size,
    read-ahead, compile: they change neither a mask nor a number."""
    settings = predictor.settings
    return RunRecord(
        settings={"models": dict(sorted(predictor.identities.items())) or None,
                  "precision": str(predictor.dtype).removeprefix("torch."), "tta": settings.tta,
                  "min_lesion_ml": float(settings.min_lesion_ml), "tile_overlap": float(settings.tile_overlap),
                  "body_windows": settings.body_windows, "spacing_tolerance": float(settings.spacing_tolerance),
                  **_backend(predictor)},
        dicom={"suv_method": suv_method or DEFAULT_SUV_METHOD,
               "weight_kg": None if weight_kg is None else float(weight_kg)},
        started=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))



def study_report(loaded: LoadedCase, mask: sitk.Image):  # -> results.report.StudyReport
    """The reports' numbers of ``mask`` on a study read by the pipeline (its PET in SUV, its CT on the PET's
    grid): what a case's reports hold, and what --skip-existing computes again for a kept mask."""
    return lesion_report(loaded.pet, mask, body_ml=body_volume_ml(loaded.ct))


@dataclass
class CaseDocuments:
    """What a case's outputs are made from: its study, its mask, the reports' model block, and the lesion
    report (made once, on first use, for every report file that needs it)."""

    case: CaseSource
    loaded: LoadedCase
    mask: sitk.Image
    model_info: Mapping | None
    # What made the outputs: the report JSON's ``made_by`` (None: not recorded, as for a caller's own writes).
    record: RunRecord | None = None

    @cached_property
    def report(self):  # results.report.StudyReport
        return study_report(self.loaded, self.mask)


@dataclass(frozen=True)
class CaseOutput:
    """One kind of file a case gets: its folder (``masks``: the grand-challenge mask folder, written in every
    mode; ``reports``: local mode only, all of them or none), its name (the case's name and ``suffix``; the
    mask's suffix is the case's image format's), whether a case gets it, its writer (``write(documents,
    path)``; a report writes to a staging path, renamed into place with the others; None for the mask, which
    runner.pipeline.write_mask writes first and in every mode, before any report) and its link on the review
    page (``page_link``: its place among a row's links and their text; None: not linked)."""

    kind: str
    folder: Literal["masks", "reports"]
    suffix: str | None
    applies: Callable[[CaseSource], bool]
    write: Callable[[CaseDocuments, Path], None] | None
    page_link: tuple[int, str] | None = None

    def file_name(self, case: CaseSource) -> str:
        return self.named(case.name, case.mask_suffix)

    def named(self, name: str, mask_suffix: str = "") -> str:
        """The file of the case called ``name`` (results.review_page knows a case by its name only)."""
        return f"{name}{mask_suffix if self.suffix is None else self.suffix}"


def _every_case(case: CaseSource) -> bool:
    return True


def _warning(documents: CaseDocuments) -> str | None:
    """The weights' warning (a demo model's) that the case's picture and report JSON carry."""
    return (documents.model_info or {}).get("warning")


def _write_report_json(documents: CaseDocuments, path: Path) -> None:
    suv = documents.loaded.suv
    record = documents.record
    write_report_json(documents.report, path, case=documents.case.name, suv=suv.to_dict() if suv is not None else None,
                      model=documents.model_info,
                      made_by=record.made_by(documents.case, documents.mask) if record is not None else None)


def _write_seg(documents: CaseDocuments, path: Path) -> None:
    info = documents.model_info
    identities = {f"model {name}": digest for name, digest in (info.get("model_sha256") or {}).items()}
    # highdicom copies the PET's patient and study values, warning (unnamed) about any its VR cannot hold.
    with warnings_about(f"{documents.case.name}.seg.dcm (values copied from the PET's headers)"):
        write_seg(documents.mask, documents.loaded.pet_headers, path, algorithm_version=str(info["version"]),
                  weights_sha256={**info["weights_sha256"], **identities})


# In the order they are written. The mask comes first: its reports describe it.
OUTPUTS = (
    CaseOutput("mask", "masks", None, _every_case, None),
    CaseOutput("lesions", "reports", ".lesions.csv", _every_case,
               lambda documents, path: write_lesions_csv(documents.report, path), page_link=(1, "csv")),
    CaseOutput("report", "reports", ".report.json", _every_case, _write_report_json, page_link=(2, "json")),
    CaseOutput("picture", "reports", ".png", _every_case,
               lambda documents, path: case_figure(path, documents.loaded.pet, documents.mask, documents.case.name,
                                                   documents.report, warning=_warning(documents)),
               page_link=(0, "png")),
    CaseOutput("seg", "reports", ".seg.dcm", lambda case: case.is_dicom, _write_seg, page_link=(3, "seg")),
)


def output_of(kind: str) -> CaseOutput:
    """The entry of ``OUTPUTS`` of this kind."""
    return next(entry for entry in OUTPUTS if entry.kind == kind)


def page_links() -> list[CaseOutput]:
    """The report files a review page links to for each case, in the order it shows them."""
    return sorted((entry for entry in OUTPUTS if entry.page_link is not None), key=lambda entry: entry.page_link)


def report_outputs(case: CaseSource) -> list[CaseOutput]:
    """The report files (local mode) that ``case`` gets, in ``OUTPUTS``' order."""
    return [output for output in OUTPUTS if output.folder == "reports" and output.applies(case)]


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

    def path(self, case: CaseSource, output: CaseOutput) -> Path:
        return (self.masks if output.folder == "masks" else self.reports) / output.file_name(case)

    def mask_path(self, case: CaseSource) -> Path:
        return self.path(case, OUTPUTS[0])

    def report_paths(self, case: CaseSource) -> dict[str, Path]:
        """The report files a case gets, by kind."""
        return {output.kind: self.path(case, output) for output in report_outputs(case)}

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


def other_cases_files(layout: OutputLayout, sources: Sequence[CaseSource]) -> list[str]:
    """Files in the mask and report folders that no case of ``sources`` (the whole run's, every part's) writes:
    outputs of another input run into this folder earlier, which this run's results.json and review page
    would not show. Hidden files (temporaries, staging) aside; sorted names."""
    expected = {layout.mask_path(case).name for case in sources}
    expected |= {output.file_name(case) for case in sources for output in OUTPUTS if output.folder == "reports"}
    found: list[str] = []
    for folder in (layout.masks, layout.reports):
        try:
            with os.scandir(folder) as entries:
                found += [entry.name for entry in entries
                          if not entry.name.startswith(".") and entry.name not in expected]
        except (FileNotFoundError, NotADirectoryError):
            continue
    return sorted(found)


def check_other_cases(layout: OutputLayout, sources: Sequence[CaseSource], keep: bool) -> str | None:
    """An output folder reused for another input: refused (InputError) unless ``keep`` (--keep-other-cases),
    which returns the one line to say (None when the folder holds nothing of other cases)."""
    found = other_cases_files(layout, sources)
    if not found:
        return None
    listing = ", ".join(shown(name) for name in found[:5]) + (f", ... {len(found) - 5} more" if len(found) > 5 else "")
    what = f"{shown(layout.root)}: {len(found)} file{'s' * (len(found) > 1)} of cases not in this input ({listing})"
    if not keep:
        raise InputError(f"{what}: this run's results.json and review page would leave them out; give a new "
                         "--output, remove them, or --keep-other-cases to keep them beside this run's")
    return f"{what} kept (--keep-other-cases); this run's results.json and review page leave them out"


def model_info(weights: Path, predictor) -> dict:
    """The reports' "model" block: this code's version, each weights file with its SHA-256 (as its JSON records
    it; loading checked it), each model's identity (``model_sha256``: its config as read and its weights; an
    edited config is another model), what the weights are (each one's card, and the warning their outputs
    carry: a demo model's "not for clinical or research use") and how they run (``predictor``: a
    model.inference.Predictor). The DICOM SEG names the version and the digests."""
    files = find_checkpoints(Path(weights))
    cards = model_cards(Path(weights))
    return {"version": VERSION, "weights_sha256": {path.name: read_config(path.with_suffix(".json"))[1]
                                                   for path in files},
            "model_sha256": dict(predictor.identities),
            "warning": cards_warning(cards), "cards": {name: dataclasses.asdict(card) for name, card in cards.items()},
            "ensemble": len(files), "encoder": predictor.config.encoder, "tta": predictor.settings.tta,
            "device": str(predictor.device), "precision": str(predictor.dtype).removeprefix("torch."),
            "min_lesion_ml": predictor.settings.min_lesion_ml, **_backend(predictor)}


def _backend(predictor) -> dict:
    """A runtime other than PyTorch, recorded: its rounding moves probabilities near the threshold as a precision
    does (PyTorch's runs record none, as before there was a choice)."""
    runtime = getattr(predictor, "runtime", None)
    return {} if runtime is None or runtime.backend == "torch" else {"backend": runtime.backend}


def write_reports(documents: CaseDocuments, out_dir: Path, then: Callable[[], None] | None = None) -> dict:
    """Write the report files the case gets (``report_outputs``) into ``out_dir``, all or none: they are made
    in a hidden folder beside their final names (``.<case>.<random>``, which ``remove_leftovers`` knows), then
    ``then`` runs (runner.pipeline writes the mask there), then they are renamed into place. A failure before
    the renames leaves the files of an earlier run as they were (a case that fails keeps them); a failure
    while renaming removes this case's reports (they would mix two runs). The error is raised (WriteError for
    a failed write). Returns the headline numbers (lesion count, TMTV, TLG, SUVmax, Dmax) for results.json.

    ``documents.model_info`` is the report's "model" block; for DICOM input it must hold ``version`` (str) and
    ``weights_sha256`` ({weights file name: hex digest}), which the SEG's algorithm identification names.
    """
    case, loaded, info = documents.case, documents.loaded, documents.model_info
    if case.is_dicom and not (loaded.pet_headers and info is not None and {"version", "weights_sha256"} <= info.keys()):
        raise ValueError("a DICOM case needs its PET headers and model_info with 'version' and 'weights_sha256'")
    outputs = report_outputs(case)
    finals = {output.kind: Path(out_dir) / output.file_name(case) for output in outputs}
    try:
        staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{case.name}."))
    except OSError as error:
        raise WriteError(f"{shown(out_dir)}: cannot be written ({error.strerror})") from None
    try:
        for output in outputs:
            output.write(documents, staging / finals[output.kind].name)
        if then is not None:
            then()
        _replace_all(staging, finals.values())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    headline = rounded_headline(documents.report)
    if loaded.warnings:  # issue 16: DICOM files skipped or images not used, one line each
        headline["warnings"] = loaded.warnings
    return headline


def _replace_all(staging: Path, finals: Iterable[Path]) -> None:
    """Rename the staged files onto their final names; on a failure none of them stays (two runs' files)."""
    finals = list(finals)
    try:
        for path in finals:
            try:
                os.replace(staging / path.name, path)
            except OSError as error:
                raise WriteError(f"{shown(path)}: not written ({error.strerror})") from None
    except BaseException:
        for path in finals:
            with contextlib.suppress(OSError):  # the error being raised is the one to report
                path.unlink(missing_ok=True)
        raise


def kept_outputs(layout: OutputLayout, case: CaseSource) -> dict | None:
    """The files of ``case`` that an earlier run left where a run that failed it would have written (they are
    kept: a transient read failure must not destroy results), and the run that made them: the one its report
    JSON records, else when its mask was written. None when there are none."""
    paths = [layout.mask_path(case), *layout.report_paths(case).values()]
    present = [path for path in paths if path.is_file()]
    if not present:
        return None
    run = None
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError, AttributeError):
        run = loads_strict(layout.report_paths(case)["report"].read_text(encoding="utf-8"))["made_by"]["run"]
    if not isinstance(run, str):
        with contextlib.suppress(OSError):
            written = datetime.datetime.fromtimestamp(paths[0].stat().st_mtime, datetime.timezone.utc)
            run = f"unrecorded (mask written {written:%Y-%m-%dT%H:%M:%SZ})"
    return {"run": run if isinstance(run, str) else "unrecorded", "files": [path.name for path in present]}


def file_entry(label: str) -> dict:
    """An input or output of a results.json entry: the image format's type by its suffix, else a DICOM series."""
    found = image_format(label)
    if found is not None:
        return {"type": found.result_type, "filename": Path(label).name}
    return {"type": "dicom_series", "filename": label}


def results_entry(case: CaseSource, mask: Path | None, headline: Mapping | None, error: str | None) -> dict:
    """A results.json entry in evalutils' form; local mode adds the headline numbers."""
    entry = {"inputs": [file_entry(case.pet_label), file_entry(case.ct_label)],
             "outputs": [] if mask is None else [file_entry(mask.name)],
             "error_messages": [] if error is None else [error]}
    entry.update(headline or {})
    return entry


def remove_stale(paths: Sequence[Path]) -> str:
    """Remove files of a case from an earlier run that would contradict what this run writes (reports beside a
    mask of --no-report); what could not be removed, for its message."""
    problems = []
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            problems.append(f"; {shown(path.name)} from an earlier run could not be removed ({error.strerror})")
    return "".join(problems)


# tempfile's random part of a name (mkstemp, mkdtemp): 8 of these characters.
_TEMPORARY = re.compile(r"\.[a-z0-9_]{8}")


def _final_name(entry: str, suffix: str) -> str | None:
    """The name whose temporary ``entry`` is, when it is ``.<name>.<8 random characters><suffix>``."""
    if not (entry.startswith(".") and entry.endswith(suffix)):
        return None
    core = entry[1:len(entry) - len(suffix)]
    return core[:-9] if len(core) > 9 and _TEMPORARY.fullmatch(core[-9:]) else None


def remove_leftovers(layout: OutputLayout, sources: Sequence[CaseSource]) -> None:
    """Temporary masks (studies.readers.write_image_atomic: ``.<mask>.<random><suffixes>``) and report staging
    folders (``write_reports``: ``.<case>.<random>``) of these cases that a killed run (SIGKILL, a lost node)
    left behind, so that a continued run leaves the folders as clean as an uninterrupted one. Only this run's
    cases: other parts may be writing into the same folders."""
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


def write_results(path: Path, entries: list[dict]) -> None:
    """results.json (evalutils' list of case entries), whole or not at all (WriteError); a temporary of it
    that a killed run left (model.files.atomic_target) is removed."""
    path = Path(path)
    for entry in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
        if _final_name(entry.name, ".part") == path.name:
            with contextlib.suppress(OSError):  # hidden and harmless where it cannot be removed
                entry.unlink()
    atomic_write_json(path, entries)  # strict JSON: a NaN raises rather than reach the file
