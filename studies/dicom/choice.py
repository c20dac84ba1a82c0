"""Choosing a study's PET and CT series among those studies.dicom.scan found: the rules (an
attenuation-corrected static PET, a CT of its frame of reference, else the largest), one question listing
every candidate where they leave several, and the series that ``--pet-series`` / ``--ct-series`` name (a UID
or a number of the folder's listing, ``Series.number``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from model.errors import InputError, shown
from studies.dicom.scan import CT_STORAGE, PET_STORAGE, Series, Study, scan_folder


def _listing(series: Sequence[Series]) -> str:
    return "; ".join(s.label() for s in series)


def _static_pets(study: Study) -> list[Series]:
    """The study's attenuation-corrected static PET series (InputError when there is none)."""
    all_series = list(study.series.values())
    pets = [s for s in all_series if s.modality == "PT" and s.sop_class in PET_STORAGE]
    corrected = [s for s in pets if "ATTN" in s.corrected_image]
    if not corrected:
        raise InputError(f"{study.label()}: no attenuation-corrected PET series (CorrectedImage with ATTN); "
                         f"series: {_listing(all_series) or 'none'}")
    static, undecided = [], []
    for candidate in corrected:
        try:
            if candidate.dynamic_or_gated() is None:
                static.append(candidate)
        except InputError as error:  # its images disagree: not a candidate, and said if none is left
            undecided.append(str(error))
    if not static and undecided:
        raise InputError(f"{study.label()}: {undecided[0]}")
    if not static:
        raise InputError(f"{study.label()}: only dynamic or gated PET, not supported: {_listing(corrected)}")
    return static


def _cts_for(cts: list[Series], pet: Series) -> tuple[list[Series], str]:
    """The CT series the rule leaves for ``pet`` (one: the choice) and, for several, why they are left: the
    ones sharing its frame of reference, else the largest."""
    matching = [s for s in cts if s.frame_of_reference and s.frame_of_reference == pet.frame_of_reference]
    if matching:
        return matching, f"{len(matching)} CT series share the PET's frame of reference"
    largest = max(len(s.files) for s in cts)
    biggest = [s for s in cts if len(s.files) == largest]
    return biggest, f"no CT shares the PET's frame of reference and {len(biggest)} are the largest"


def _given(study: Study, uid: str | None, option: str, modality: str) -> Series | None:
    if uid not in study.series:
        return None
    series = study.series[uid]
    if series.modality != modality:
        raise InputError(f"{study.label()}: {option} {uid} is a {series.modality} series, not "
                         f"{'PET' if modality == 'PT' else modality}")
    return series


def choose_series(study: Study, pet_series: str | None = None, ct_series: str | None = None) -> tuple[Series, Series]:
    """The study's PET series (attenuation corrected, static) and its CT (same frame of reference, else the
    largest). A UID given that belongs to this study chooses; one that does not is ignored here. Where the
    rules leave several, one InputError asks for every choice needed at once (the PET's and the CT's), listing
    each candidate with its number (``Series.number``), modality, description, date, images and UID."""
    if study.conflicts:
        raise InputError(study.conflicts[0])
    pet = _given(study, pet_series, "--pet-series", "PT")
    ct = _given(study, ct_series, "--ct-series", "CT")
    pets = [pet] if pet is not None else _static_pets(study)
    questions = []
    if len(pets) > 1:
        questions.append(("--pet-series", f"{len(pets)} PET series could be the one", pets))
    if ct is None:
        cts = [s for s in study.series.values() if s.modality == "CT" and s.sop_class in CT_STORAGE
               and not s.is_localizer]
        if not cts:
            raise InputError(f"{study.label()}: no CT series; series: {_listing(list(study.series.values()))}")
        left = [_cts_for(cts, candidate) for candidate in pets]
        open_choices = [(found, why) for found, why in left if len(found) > 1]
        if open_choices:
            candidates = sorted({s.uid: s for found, _ in open_choices for s in found}.values(),
                                key=lambda s: s.number)
            why = open_choices[0][1] if len(pets) == 1 else f"{len(candidates)} CT series could be the one"
            questions.append(("--ct-series", why, candidates))
        else:
            ct = left[0][0][0] if len(pets) == 1 else None
    if questions:
        asked = "; ".join(f"{option}: {why}: {' | '.join(s.choice_label() for s in found)}"
                          for option, why, found in questions)
        example = " ".join(f"{option} {found[0].number}" for option, _, found in questions)
        raise InputError(f"{study.label()}: choose {' and '.join(q[0] for q in questions)}; {asked}; give a "
                         f"series by its [number] or its UID (e.g. {example})")
    return pets[0], ct


def series_in_folder(folder: Path, modality: str) -> Series:
    """The one series of ``modality`` (PT or CT) in a folder: what ``process.py --pet DIR --ct DIR`` reads."""
    found = [s for study in scan_folder(folder) for s in study.series.values()
             if s.modality == modality and not s.is_localizer]
    if not found:
        raise InputError(f"{shown(folder)}: no {modality} DICOM series in this folder")
    if len(found) > 1:
        raise InputError(f"{shown(folder)}: {len(found)} {modality} series, expected one: {_listing(found)}")
    return found[0]


def resolve_series_choice(studies: Sequence[Study], pet_series: str | None,
                          ct_series: str | None) -> tuple[str | None, str | None]:
    """The series UIDs that ``--pet-series`` / ``--ct-series`` give, each a UID or a series' number in the
    folder's listing (``Series.number``); one that is neither must not choose nothing silently: InputError."""
    every = {series.uid: series for study in studies for series in study.series.values()}
    by_number = {str(series.number): series.uid for series in every.values()}
    resolved = []
    for option, given in (("--pet-series", pet_series), ("--ct-series", ct_series)):
        if given is None or given in every:
            resolved.append(given)
        elif given.strip() in by_number:
            resolved.append(by_number[given.strip()])
        else:
            raise InputError(f"{option} {given}: no such series in the DICOM folder (give a series' UID or its "
                             f"[number], 1 to {len(every)}, as a listing of choices shows it)")
    return resolved[0], resolved[1]
