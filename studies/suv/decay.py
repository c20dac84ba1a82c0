"""The times the dose is decayed between and the decayed dose: the injection, and each image's reference time
(DecayCorrection START: QIBA's series start, else the IBSI manual's vendor scan start or scan start back-computed
frame by frame; NONE: when each frame's values occurred; ADMIN: only their order checked), with the checks that
refuse a scan before the injection or implausibly long after it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Sequence

from pydicom.dataset import Dataset

from model.errors import InputError
from studies.suv.headers import (
    acquisition_datetime,
    combine_date_time,
    number_of,
    parse_date,
    parse_datetime,
    parse_time,
    radiopharmaceutical,
)
from studies.suv.vendors import made_by, private_scan_start

# Back-computed scan starts of the frames of one series within this many seconds are one scan start (the
# manual compares times to 3 s; back-computation rounds to about a second).
SAME_SCAN_START_S = 1.0
# An acquisition this long after its series start is said (a series start, then beds over an hour at most).
LATE_ACQUISITION_S = 3600.0
# A decay time beyond this many half-lives is no scan (F-18: 18 h): the dates are wrong, e.g. shifted by an
# anonymiser in some elements and not in others.
MAX_HALF_LIVES = 10.0


class _NoTime(InputError):
    """A time the decay needs is missing (not malformed): under DecayCorrection ADMIN the decay needs none."""


def average_count_time_s(frame_duration_s: float, half_life_s: float) -> float:
    """T_ave: seconds from a frame's start to its average count rate (QIBA; the manual's formula)."""
    rate = math.log(2) / half_life_s
    decay = rate * frame_duration_s
    return math.log(decay / -math.expm1(-decay)) / rate


@dataclasses.dataclass
class _ScanTimes:
    """The decay-correction reference time of every header (one for all, or one each) and where it came from."""

    frames: list[dt.datetime]
    source: str
    notes: list[str]

    @property
    def earliest(self) -> dt.datetime:
        return min(self.frames)


def _frame_seconds(ds: Dataset, keyword: str, source: str) -> float | None:
    value = ds.get(keyword)
    if value in (None, ""):
        return None
    number = number_of(value)
    if number is None:
        raise InputError(f"{source}: {keyword} {str(value).strip()!r} is not a number")
    return number / 1000.0


def _measurement_times(headers: Sequence[Dataset], series_date: dt.date, half_life_s: float,
                       source: str) -> list[dt.datetime]:
    """Per frame: AcquisitionDate/Time + T_ave of its ActualFrameDuration, when its values occurred
    (DecayCorrection NONE)."""
    times = []
    for ds in headers:
        acquisition = acquisition_datetime(ds, series_date, source)
        duration = _frame_seconds(ds, "ActualFrameDuration", source)
        if acquisition is None or duration is None or duration <= 0:
            raise InputError(f"{source}: DecayCorrection NONE needs every image's AcquisitionTime and a positive "
                             "ActualFrameDuration (the time its values occurred)")
        times.append(acquisition + dt.timedelta(seconds=average_count_time_s(duration, half_life_s)))
    return times


def _back_computed_starts(headers: Sequence[Dataset], series_date: dt.date, half_life_s: float,
                          source: str) -> list[dt.datetime] | None:
    """The manual's scan start of every frame from AcquisitionDate/Time, FrameReferenceTime and (not GE)
    ActualFrameDuration: GE t_acq - FRT, others t_acq + T_ave - FRT; None when a frame lacks them."""
    starts = []
    for ds in headers:
        acquisition = acquisition_datetime(ds, series_date, source)
        reference = _frame_seconds(ds, "FrameReferenceTime", source)
        if acquisition is None or reference is None or reference < 0:
            return None
        if made_by(ds, "GE"):
            starts.append(acquisition - dt.timedelta(seconds=reference))
            continue
        duration = _frame_seconds(ds, "ActualFrameDuration", source)
        if duration is None or duration <= 0:
            return None
        offset = average_count_time_s(duration, half_life_s) - reference
        starts.append(acquisition + dt.timedelta(seconds=offset))
    return starts


def _one_or_each(starts: list[dt.datetime], source_words: str) -> _ScanTimes:
    spread = (max(starts) - min(starts)).total_seconds()
    if spread <= SAME_SCAN_START_S:
        ordered = sorted(starts)
        return _ScanTimes([ordered[len(ordered) // 2]] * len(starts), source_words, [])
    return _ScanTimes(starts, source_words + " frame by frame", [
        f"the frames back-compute to scan starts {spread:.0f} s apart ({min(starts).isoformat()} to "
        f"{max(starts).isoformat()}): each frame's dose decayed to its own (the manual's per-frame rule)"])


def _start_times(headers: Sequence[Dataset], method: str, series_date: dt.date, half_life_s: float,
                 source: str) -> _ScanTimes:
    """DecayCorrection START: QIBA's SeriesDate/Time while it is not after an acquisition; else the manual's
    rules (the vendor's private scan start, else the start back-computed frame by frame)."""
    count = len(headers)
    if method == "autopet":
        scan = acquisition_datetime(headers[0], series_date, source)
        if scan is None:
            raise _NoTime(f"{source}: the first file has no AcquisitionTime (needed by --suv-method autopet)")
        return _ScanTimes([scan] * count, "AcquisitionTime of the series' first file (autoPET conversion)", [])
    series = combine_date_time(series_date, parse_time(headers[0].get("SeriesTime"), "SeriesTime", source))
    acquisitions = [a for a in (acquisition_datetime(ds, series_date, source) for ds in headers) if a is not None]
    earliest = min(acquisitions) if acquisitions else None
    if series is not None and (earliest is None or series <= earliest):
        notes = []
        if earliest is not None and (late := (earliest - series).total_seconds()) > LATE_ACQUISITION_S:
            notes.append(f"the earliest AcquisitionDate/Time {earliest.isoformat()} is {late / 3600:.1f} h after "
                         f"SeriesDate/Time {series.isoformat()} (dates shifted unequally?): the series start is "
                         "used, as QIBA's rule has it")
        return _ScanTimes([series] * count, "SeriesDate/SeriesTime", notes)
    why = "SeriesTime is after the acquisition" if series is not None else "no SeriesDate/SeriesTime"
    private, name = private_scan_start(headers[0], source)
    if private is not None:
        return _ScanTimes([private] * count, f"{name}: {why}", [])
    starts = _back_computed_starts(headers, series_date, half_life_s, source)
    if starts is not None:
        return _one_or_each(starts, f"scan start back-computed from AcquisitionTime, FrameReferenceTime and "
                                    f"ActualFrameDuration: {why}")
    if series is None and earliest is not None:
        return _ScanTimes([earliest] * count, f"earliest AcquisitionDate/Time: {why}", [])
    if series is not None:  # _NoTime: under ADMIN only the order of the times was to be checked
        raise _NoTime(f"{source}: SeriesDate/Time {series.isoformat()} is after AcquisitionDate/Time "
                      f"{earliest.isoformat()}, and without a private scan start, FrameReferenceTime and "
                      "ActualFrameDuration the scan start cannot be back-computed")
    raise _NoTime(f"{source}: no SeriesDate/SeriesTime nor AcquisitionDate/Time: no scan time for the decay "
                  "correction")


def _reference_times(headers: Sequence[Dataset], method: str, decay: str, half_life_s: float,
                     source: str) -> tuple[_ScanTimes, list[str]]:
    """The time each header's values are decay-corrected to (START: the scan start; NONE: when they occurred;
    ADMIN: the scan start, only to check its order), and notes."""
    first = headers[0]
    notes: list[str] = []
    series_date = (parse_date(first.get("SeriesDate"), "SeriesDate", source)
                   or parse_date(first.get("AcquisitionDate"), "AcquisitionDate", source))
    if series_date is None:
        series_date = dt.date(1900, 1, 1)  # anonymisers may blank every date: times of day still order
        notes.append("no SeriesDate or AcquisitionDate: times of day only")
    if decay == "NONE":
        frames = _measurement_times(headers, series_date, half_life_s, source)
        times = _ScanTimes(frames, "AcquisitionDate/Time + T_ave of each frame (DecayCorrection NONE)", [])
    else:
        times = _start_times(headers, method, series_date, half_life_s, source)
    return times, notes + times.notes


def _injection(first: Dataset, reference: dt.datetime, half_life_s: float, source: str
               ) -> tuple[dt.datetime, str, list[str]]:
    """The injection time (with its source and notes), its date taken from ``reference`` where the header's
    has none or cannot be right; _NoTime when there is none."""
    notes: list[str] = []
    info = radiopharmaceutical(first)
    injection = parse_datetime(info.get("RadiopharmaceuticalStartDateTime"), "RadiopharmaceuticalStartDateTime", source)
    injection_source = "RadiopharmaceuticalStartDateTime"
    start_time = parse_time(info.get("RadiopharmaceuticalStartTime"), "RadiopharmaceuticalStartTime", source)
    if injection is not None:
        hours = (reference - injection).total_seconds() / 3600.0
        if not 0 <= hours * 3600.0 <= MAX_HALF_LIVES * half_life_s and injection.date() != reference.date():
            # Anonymisers shift the DA elements but may leave the DT ones (or the other way round): the time of
            # day survives, the date does not.
            notes.append(f"RadiopharmaceuticalStartDateTime {injection.isoformat()} is {hours:.1f} h from the scan: "
                         "its date differs (date-shifted anonymisation?); its time of day used on the scan's date")
            start_time, injection = injection.time(), None
            injection_source = "time of day of RadiopharmaceuticalStartDateTime on the scan's date"
    if injection is None:
        if start_time is None:
            raise _NoTime(f"{source}: no RadiopharmaceuticalStartDateTime or RadiopharmaceuticalStartTime: "
                          "injection time unknown")
        if injection_source == "RadiopharmaceuticalStartDateTime":
            injection_source = "RadiopharmaceuticalStartTime on the scan's date"
        injection = combine_date_time(reference.date(), start_time)
        if injection > reference:
            injection -= dt.timedelta(days=1)
            notes.append("injection before midnight, scan after it: injection taken on the previous day")
    return injection, injection_source, notes


def _checked_decays(injection: dt.datetime, injection_source: str, times: _ScanTimes, half_life_s: float,
                    source: str) -> list[float]:
    """Seconds from injection to each frame's reference time; one before the injection, or too long after it,
    is refused: the dates or times (or the patient) are wrong, whether or not the dose is decayed."""
    decays = []
    for scan in times.frames:
        decay_s = (scan - injection).total_seconds()
        if decay_s < 0:
            raise InputError(f"{source}: scan time {scan.isoformat()} ({times.source}) is before the injection "
                             f"{injection.isoformat()} ({injection_source}): negative decay time")
        if decay_s > MAX_HALF_LIVES * half_life_s:
            raise InputError(f"{source}: {decay_s / 3600:.1f} h from injection {injection.isoformat()} to scan "
                             f"{scan.isoformat()}, over {MAX_HALF_LIVES:.0f} half-lives: dates or times are wrong")
        decays.append(decay_s)
    return decays


def decayed_doses(headers: Sequence[Dataset], method: str, decay: str, dose: float, half_life: float,
                   source: str) -> tuple[list[float], str, dict, list[str]]:
    """(the dose at each header's reference time, the rule's words, the times for SuvConversion, notes)."""
    count = len(headers)
    if decay == "ADMIN":
        rule = "DecayCorrection ADMIN: images decay corrected to the injection, dose not decayed"
        try:
            times, notes = _reference_times(headers, method, decay, half_life, source)
            injection, injection_source, more = _injection(headers[0], times.earliest, half_life, source)
        except _NoTime:
            return [dose] * count, rule, {}, ["DecayCorrection ADMIN: injection or scan time missing, their order "
                                              "unchecked"]
        _checked_decays(injection, injection_source, times, half_life, source)  # no decay, but the order
        return [dose] * count, rule, dict(
            injection_time=injection.isoformat(), injection_time_source=injection_source,
            scan_time=times.earliest.isoformat(), scan_time_source=times.source), notes + more
    times, notes = _reference_times(headers, method, decay, half_life, source)
    injection, injection_source, more = _injection(headers[0], times.earliest, half_life, source)
    decays = _checked_decays(injection, injection_source, times, half_life, source)
    recorded = dict(injection_time=injection.isoformat(), injection_time_source=injection_source,
                    scan_time=times.earliest.isoformat(), scan_time_source=times.source, decay_time_s=min(decays))
    spread = max(decays) - min(decays)
    rule = (f"dose decayed over {min(decays):.0f} s from injection to {times.source}" if spread == 0 else
            f"dose decayed frame by frame over {min(decays):.0f} to {max(decays):.0f} s from injection to "
            f"{times.source}")
    return [dose * 2.0 ** (-decay_s / half_life) for decay_s in decays], rule, recorded, notes + more
