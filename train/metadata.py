"""The diagnosis of each study, from the metadata CSVs that come with the autoPET releases.

Which CSVs, and what is assumed about their columns (matched case- and punctuation-insensitively):
- TCIA's collection CSV (``Clinical Metadata FDG PET_CT Lesions.csv``): one row per DICOM series, with
  ``Subject ID``, ``diagnosis`` and ``File Location`` = ``./FDG-PET-CT-Lesions/<Subject ID>/<study folder>/
  <series folder>``. The study folder names keep their double spaces.
- The NIfTI release's ``autoPETmeta.csv``: one row per study, ``study_location`` =
  ``./FDG-PET-CT-Lesions/<patient>/<study folder>/``, ``diagnosis``.
- autoPET III's ``fdg_metadata.csv``: assumed to be the TCIA collection CSV again (the release calls it the
  original FDG metadata): ``Subject ID``, ``File Location``, ``diagnosis``.
- autoPET III's ``psma_metadata.csv``: assumed to have ``Subject ID`` (``PSMA_<patient>``) and no
  ``diagnosis`` column; its patients are the PSMA cohort, men with prostate cancer, so its studies get
  PROSTATE_CANCER. A ``diagnosis`` column, if there is one, wins.
A CSV without a diagnosis column or a patient (``Subject ID``, ``File Location`` or ``study_location``)
is not metadata and is passed over. Studies are matched on (patient, study folder); a patient whose
studies all have one diagnosis also matches by patient alone (the nnU-Net names carry no series).
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from model.errors import InputError
from train.notices import warn

UNKNOWN = "UNKNOWN"
PSMA_DIAGNOSIS = "PROSTATE_CANCER"
# Above this fraction of studies without a diagnosis, the folds are hardly stratified: say so.
UNKNOWN_WARNING_FRACTION = 0.10
_PATIENT_PREFIX = re.compile(r"^(PETCT|PSMA|FDG)_", re.IGNORECASE)


def patient_key(identifier: str) -> str:
    """The patient's hash without its release prefix: PETCT_0011f3deaf, fdg_0011f3deaf -> 0011f3deaf."""
    return _PATIENT_PREFIX.sub("", identifier.strip())


def _squashed(study: str) -> str:
    """A study folder name with whitespace runs made one space (tools that collapse the double space)."""
    return " ".join(study.split())


def _normalised(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _column(fieldnames: Iterable[str], *aliases: str) -> str | None:
    wanted = {_normalised(a) for a in aliases}
    return next((name for name in fieldnames if _normalised(name) in wanted), None)


def _patient_and_study(location: str, subject: str | None) -> tuple[str, str] | None:
    """(patient key, study folder) from a File Location / study_location, or None when it names no study."""
    parts = [p for p in location.replace("\\", "/").split("/") if p not in ("", ".")]
    # The component that is the Subject ID, else the first that looks like a patient folder (PETCT_...).
    found = [i for i, part in enumerate(parts[:-1]) if subject and part == subject]
    found += [i for i, part in enumerate(parts[:-1]) if _PATIENT_PREFIX.match(part)]
    return (patient_key(parts[found[0]]), parts[found[0] + 1]) if found else None


@dataclass
class Diagnoses:
    """Diagnosis by (patient key, study folder), and by patient where all its studies agree."""

    by_study: dict[tuple[str, str], str] = field(default_factory=dict)
    by_patient: dict[str, set[str]] = field(default_factory=dict)
    sources: list[Path] = field(default_factory=list)

    def add(self, patient: str, study: str | None, diagnosis: str) -> None:
        if study is not None:
            self.by_study.setdefault((patient, study), diagnosis)
            self.by_study.setdefault((patient, _squashed(study)), diagnosis)
        self.by_patient.setdefault(patient, set()).add(diagnosis)

    def lookup(self, patient: str, study: str) -> str:
        found = self.by_study.get((patient, study)) or self.by_study.get((patient, _squashed(study)))
        if found:
            return found
        per_patient = self.by_patient.get(patient, set())
        return next(iter(per_patient)) if len(per_patient) == 1 else UNKNOWN


def read_metadata(paths: Iterable[Path]) -> Diagnoses:
    """Diagnoses from every metadata CSV among ``paths`` (others are passed over)."""
    diagnoses = Diagnoses()
    for path in paths:
        try:
            with open(path, newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                fields = reader.fieldnames or []
                location = _column(fields, "File Location", "study_location", "location")
                subject = _column(fields, "Subject ID", "patient_id", "patient")
                diagnosis = _column(fields, "diagnosis")
                is_psma = "psma" in path.name.lower()
                if not (location or subject) or not (diagnosis or is_psma):
                    continue
                for row in reader:
                    value = (row.get(diagnosis) or "").strip().upper() if diagnosis else PSMA_DIAGNOSIS
                    if not value:
                        continue
                    subject_id = (row.get(subject) or "").strip() if subject else None
                    where = _patient_and_study(row.get(location) or "", subject_id) if location else None
                    if where is not None:
                        diagnoses.add(where[0], where[1], value)
                    elif subject_id:
                        diagnoses.add(patient_key(subject_id), None, value)
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            raise InputError(f"{path}: cannot read this metadata CSV: {error}") from None
        diagnoses.sources.append(Path(path))
    return diagnoses


def metadata_csvs(source: Path, given: Path | None) -> list[Path]:
    """The CSV given with --metadata, else every CSV anywhere under ``source``."""
    if given is not None:
        if not Path(given).is_file():
            raise InputError(f"{given}: --metadata file missing")
        return [Path(given)]
    return sorted(Path(source).rglob("*.csv"))


def diagnosis_table(studies: Iterable[tuple[str, str]]) -> str:
    """Studies and patients per diagnosis, from (patient, diagnosis) pairs, one study each."""
    pairs = list(studies)
    study_counts = Counter(d for _, d in pairs)
    patient_counts = Counter(d for _, d in set(pairs))
    lines = [f"{'diagnosis':<18}{'studies':>8}{'patients':>10}"]
    lines += [f"{d:<18}{study_counts[d]:>8}{patient_counts[d]:>10}" for d in sorted(study_counts)]
    lines.append(f"{'all':<18}{len(pairs):>8}{len({p for p, _ in pairs}):>10}")
    return "\n".join(lines)


def warn_if_mostly_unknown(diagnoses: list[str], sources: list[Path]) -> None:
    unknown = sum(d == UNKNOWN for d in diagnoses)
    if diagnoses and unknown > UNKNOWN_WARNING_FRACTION * len(diagnoses):
        read = ", ".join(str(s) for s in sources) if sources else "no metadata CSV found"
        warn(f"{unknown} of {len(diagnoses)} studies ({100 * unknown / len(diagnoses):.0f} %) have no diagnosis "
             f"(metadata read: {read}); the folds cannot be stratified by diagnosis for them. Give the release's "
             "metadata CSV with --metadata PATH")
