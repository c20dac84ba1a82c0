"""SUV (body weight) of a PET series from its DICOM headers.

``qiba`` follows QIBA's vendor-neutral algorithm (as OHIF's calculate-suv implements it): the dose is decayed
from injection to the scan start. ``autopet`` reproduces the conversion the autoPET NIfTI data were made with
(and so the scale the model learned): the dose decayed to the AcquisitionTime of the series' first file. Both
share every check; they differ only in the time the dose is decayed to.

Where QIBA's pseudo-code has no rule, or one that the IBSI SUV manual (oncoray/suv_computation, "Comprehensive
Manual for SUV Computation and Digital Reference Objects for its Verification") shows to give wrong numbers, the
manual's rule is followed: images stored as SUV of another kind (Units GML with an SUV Type, CM2ML) are converted
to SUVbw with its formulas; a dose written in MBq is converted; Philips factors without their private creator are
read; a SeriesTime after the acquisition is replaced by the vendor's private scan start or by the scan start
back-computed frame by frame; DecayCorrection NONE is decay-corrected frame by frame.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, get_args

from pydicom.dataset import Dataset
from pydicom.valuerep import DT, TM

from model.errors import InputError

SuvMethod = Literal["qiba", "autopet"]
SUV_METHODS: tuple[str, ...] = get_args(SuvMethod)
# QIBA's vendor-neutral rules: the method wherever none is given (process.py's and model.dicom's --suv-method).
DEFAULT_SUV_METHOD: SuvMethod = "qiba"

GE_PET_CREATOR = "GEMS_PETD_01"
GE_SCAN_DATETIME = 0x0D  # (0009,100D): GE's scan start, kept when a series is re-created later
PHILIPS_PET_CREATOR = "Philips PET Private Group"
PHILIPS_SUV_FACTOR = 0x00  # (7053,1000): CNTS to SUVbw
PHILIPS_ACTIVITY_FACTOR = 0x09  # (7053,1009): CNTS to Bq/ml
SIEMENS_PET_CREATOR = "SIEMENS MED PT"
SIEMENS_SCAN_DATETIME = 0x22  # (0071,1022): Siemens' decay correction (scan start) date and time
# The manual: a RadionuclideTotalDose above 0 and below this cannot be Bq (FDG doses are 1e8 to 1e9 Bq); it is MBq.
MBQ_DOSE_BELOW = 1e4
# Back-computed scan starts of the frames of one series within this many seconds are one scan start (the
# manual compares times to 3 s; back-computation rounds to about a second).
SAME_SCAN_START_S = 1.0
# An acquisition this long after its series start is said (a series start, then beds over an hour at most).
LATE_ACQUISITION_S = 3600.0
PLAUSIBLE_HEIGHT_M = (0.3, 2.75)  # PatientSize is in metres (DICOM); a phantom or a person
F18_HALF_LIFE_S = (6540.0, 6640.0)  # 109.77 min (6586.2 s; GE writes 6588): the model is trained on FDG
FDG_NAMES = ("FDG", "FLUORODEOXYGLUCOSE", "FLUDEOXYGLUCOSE", "DEOXYGLUCOSE")
FDG_CODES = ("35321007", "C-B1031")  # SNOMED CT / SRT: Fluorodeoxyglucose F^18^ (DICOM CID 4021)
# A decay time beyond this many half-lives is no scan (F-18: 18 h): the dates are wrong, e.g. shifted by an
# anonymiser in some elements and not in others.
MAX_HALF_LIVES = 10.0


@dataclasses.dataclass(frozen=True)
class SuvConversion:
    """SUVbw = stored value x RescaleSlope + RescaleIntercept, times ``factor``; with every value used."""

    method: str
    units: str
    decay_correction: str
    corrected_image: tuple[str, ...]
    factor: float
    rule: str
    weight_kg: float | None = None
    weight_source: str | None = None
    injected_dose_bq: float | None = None
    half_life_s: float | None = None
    injection_time: str | None = None
    injection_time_source: str | None = None
    scan_time: str | None = None
    scan_time_source: str | None = None
    decay_time_s: float | None = None
    decayed_dose_bq: float | None = None
    vendor_factor: float | None = None
    vendor_factor_source: str | None = None
    suv_type_factor: float | None = None  # SUVbw = stored SUV of another kind x this (weight / LBM, IBW, BSA)
    tracer: str | None = None
    notes: tuple[str, ...] = ()
    # Decay corrected frame by frame (DecayCorrection NONE, or scan starts back-computed per frame): one factor
    # per header given to suv_conversion, in that order; empty when ``factor`` holds for every image.
    frame_factors: tuple[float, ...] = ()

    def factor_of(self, index: int) -> float:
        """The factor of the ``index``-th header given to suv_conversion."""
        return self.frame_factors[index] if self.frame_factors else self.factor

    def to_dict(self) -> dict:
        """JSON-ready: the block written to suv.json and into the report (per-frame factors as their range)."""
        document = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
                    if k != "frame_factors"}
        if self.frame_factors:
            document["frame_factors"] = {"count": len(self.frame_factors), "min": min(self.frame_factors),
                                         "max": max(self.frame_factors)}
        return document


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def values_of(value: object) -> tuple[str, ...]:
    """A (possibly multi-valued) element as upper-case strings; a one-valued string is one value, not letters."""
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        value = [value]
    return tuple(str(v).strip().upper() for v in value)


# The years a DICOM date or date-time of a scan may carry: wide enough for any date-shifting anonymiser (some
# write 1900), narrow enough that the arithmetic on it (a day back over midnight, ten half-lives on) stays in
# Python's calendar: year 0001 raised OverflowError from deep inside the decay instead of one line.
DICOM_YEARS = (1900, 2999)


def _checked_year(parsed: dt.date, keyword: str, value: object, source: str) -> None:
    if not DICOM_YEARS[0] <= parsed.year <= DICOM_YEARS[1]:
        raise InputError(f"{source}: {keyword} {str(value).strip()!r} is not a plausible date (year {parsed.year}, "
                         f"expected {DICOM_YEARS[0]} to {DICOM_YEARS[1]})")


def _date(value: object, keyword: str, source: str) -> dt.date | None:
    """A DA value; None when empty; a value that is no date, or not a plausible one, is refused (it would
    silently change the decay). The one parser of DICOM dates (model.dicom and this module)."""
    text = str(value or "").strip().replace(".", "").replace("-", "")  # ACR-NEMA wrote 2002.11.07
    if not text:
        return None
    parsed = None
    try:
        if len(text) == 8 and text.isdigit():
            parsed = dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        pass  # refused below, with the value
    if parsed is None:
        raise InputError(f"{source}: {keyword} {str(value).strip()!r} is not a date (YYYYMMDD)")
    _checked_year(parsed, keyword, value, source)
    return parsed


def _time(value: object, keyword: str, source: str) -> dt.time | None:
    text = str(value or "").strip().replace(":", "")  # ACR-NEMA wrote 10:15:30
    if not text:
        return None
    try:
        return TM(text)
    except (ValueError, TypeError, OverflowError):
        raise InputError(f"{source}: {keyword} {str(value).strip()!r} is not a time (HHMMSS.FFFFFF)") from None


def _datetime(value: object, keyword: str, source: str) -> dt.datetime | None:
    """A DT value as naive local time (an offset, when written, describes that same local time)."""
    text = str(value or "").strip()
    if not text:
        return None
    try:
        parsed = DT(text) if len(text) >= 8 else None
    except (ValueError, TypeError, OverflowError):
        parsed = None
    if parsed is None:
        raise InputError(f"{source}: {keyword} {text!r} is not a date and time (YYYYMMDDHHMMSS)")
    _checked_year(parsed, keyword, text, source)
    return dt.datetime(parsed.year, parsed.month, parsed.day, parsed.hour, parsed.minute, parsed.second,
                       parsed.microsecond)


def _combine(date: dt.date | None, time: dt.time | None) -> dt.datetime | None:
    if date is None or time is None:
        return None
    return dt.datetime.combine(date, dt.time(time.hour, time.minute, time.second, time.microsecond))


def _acquisition_datetime(ds: Dataset, default_date: dt.date, source: str) -> dt.datetime | None:
    combined = _datetime(ds.get("AcquisitionDateTime"), "AcquisitionDateTime", source)
    if combined is not None:
        return combined
    date = _date(ds.get("AcquisitionDate"), "AcquisitionDate", source) or default_date
    return _combine(date, _time(ds.get("AcquisitionTime"), "AcquisitionTime", source))


def _private_value(ds: Dataset, group: int, creator: str, element: int) -> object | None:
    """A private element's value when its block belongs to ``creator`` (another vendor's may sit there)."""
    try:
        block = ds.private_block(group, creator)
    except KeyError:
        return None
    return _element_value(ds, block.get_tag(element))


def _element_value(ds: Dataset, tag: int) -> object | None:
    if tag not in ds:
        return None
    value = ds[tag].value
    return value.decode("ascii", errors="replace").strip("\x00 ") if isinstance(value, bytes) else value


def made_by(ds: Dataset, vendor: str) -> bool:
    """Whether Manufacturer names ``vendor`` (a word of it, any case: "GE MEDICAL SYSTEMS", "GEMS" for GE)."""
    words = "".join(ch if ch.isalnum() else " " for ch in _text(ds, "Manufacturer").upper()).split()
    return vendor.upper() in words or (vendor.upper() == "GE" and "GEMS" in words)


def _vendor_private(ds: Dataset, group: int, creator: str, element: int, vendor: str) -> tuple[object | None, str]:
    """(value, how it was found) of a vendor's private element. Exports that drop the private creator
    (gggg,0010) keep the element at (gggg,10xx), and the manual reads it by that tag: so does this, only where
    no creator reserves that block and the Manufacturer is the vendor."""
    value = _private_value(ds, group, creator, element)
    if value is not None:
        return value, ""
    if (group << 16 | 0x0010) in ds or not made_by(ds, vendor):
        return None, ""
    value = _element_value(ds, group << 16 | 0x1000 | element)
    return value, "" if value is None else f" (no private creator: read at ({group:04X},{0x1000 | element:04X}))"


def _number(value: object) -> float | None:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _positive_number(value: object) -> float | None:
    number = _number(value)
    return number if number is not None and number > 0 else None


def _radiopharmaceutical(ds: Dataset) -> Dataset:
    sequence = ds.get("RadiopharmaceuticalInformationSequence")
    return sequence[0] if sequence else Dataset()


# What every image of a series must agree on (series-level values), as QIBA's pseudo-code and OHIF's
# calculate-suv require: with the first file's values taken, a mixed series would get a factor that is wrong
# for some of its slices. Numbers compare as numbers ("75" and "75.0" agree).
SERIES_LEVEL: tuple[tuple[str, Callable[[Dataset], object], bool], ...] = (
    ("Units", lambda ds: ds.get("Units"), False),
    ("DecayCorrection", lambda ds: ds.get("DecayCorrection"), False),
    ("CorrectedImage", lambda ds: ds.get("CorrectedImage"), False),
    ("PatientWeight", lambda ds: ds.get("PatientWeight"), True),
    ("SeriesDate", lambda ds: ds.get("SeriesDate"), False),
    ("SeriesTime", lambda ds: ds.get("SeriesTime"), False),
    ("RadionuclideTotalDose", lambda ds: _radiopharmaceutical(ds).get("RadionuclideTotalDose"), True),
    ("RadionuclideHalfLife", lambda ds: _radiopharmaceutical(ds).get("RadionuclideHalfLife"), True),
    ("RadiopharmaceuticalStartTime", lambda ds: _radiopharmaceutical(ds).get("RadiopharmaceuticalStartTime"), False),
    ("RadiopharmaceuticalStartDateTime",
     lambda ds: _radiopharmaceutical(ds).get("RadiopharmaceuticalStartDateTime"), False),
    ("GE private scan time (0009,100D)",
     lambda ds: _private_value(ds, 0x0009, GE_PET_CREATOR, GE_SCAN_DATETIME), False),
    ("SIEMENS private scan time (0071,1022)",
     lambda ds: _private_value(ds, 0x0071, SIEMENS_PET_CREATOR, SIEMENS_SCAN_DATETIME), False),
    ("SUVType", lambda ds: ds.get("SUVType"), False),
    # Read only to turn stored SUV of another kind into SUVbw (suv_conversion skips them otherwise).
    ("PatientSize", lambda ds: ds.get("PatientSize"), True),
    ("PatientSex", lambda ds: ds.get("PatientSex"), False),
)
BODY_SIZE_ONLY = ("PatientSize", "PatientSex")


def _comparable(value: object, numeric: bool) -> object:
    values = values_of(value)
    if numeric and len(values) == 1 and (number := _number(values[0])) is not None:
        return number
    return "\\".join(values)


def check_series_level(headers: Sequence[Dataset], source: str, skip: Sequence[str] = ()) -> None:
    """One line naming the first series-level value on which the images of the series disagree."""
    for name, getter, numeric in SERIES_LEVEL:
        if name in skip:
            continue
        seen: Counter = Counter()
        shown_as: dict[object, str] = {}
        for ds in headers:
            raw = getter(ds)
            key = _comparable(raw, numeric)
            seen[key] += 1
            shown_as.setdefault(key, "\\".join(values_of(raw)) or "(missing)")
        if len(seen) > 1:
            listing = ", ".join(f"{shown_as[key]!r} in {count} file{'s' * (count > 1)}"
                                for key, count in seen.most_common())
            raise InputError(f"{source}: {name} differs between the images of the series ({listing}): one series "
                             "must have one value")


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
    number = _number(value)
    if number is None:
        raise InputError(f"{source}: {keyword} {str(value).strip()!r} is not a number")
    return number / 1000.0


def _measurement_times(headers: Sequence[Dataset], series_date: dt.date, half_life_s: float,
                       source: str) -> list[dt.datetime]:
    """Per frame: AcquisitionDate/Time + T_ave of its ActualFrameDuration, when its values occurred
    (DecayCorrection NONE)."""
    times = []
    for ds in headers:
        acquisition = _acquisition_datetime(ds, series_date, source)
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
        acquisition = _acquisition_datetime(ds, series_date, source)
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


def _private_scan_start(first: Dataset, source: str) -> tuple[dt.datetime | None, str]:
    """GE's (0009,100D) or Siemens' (0071,1022) scan start, the manual's first choice when SeriesTime is not."""
    for group, creator, element, vendor in ((0x0009, GE_PET_CREATOR, GE_SCAN_DATETIME, "GE"),
                                            (0x0071, SIEMENS_PET_CREATOR, SIEMENS_SCAN_DATETIME, "SIEMENS")):
        value, how = _vendor_private(first, group, creator, element, vendor)
        name = f"{vendor} private scan time ({group:04X},{0x1000 | element:04X})"
        scan = _datetime(value, name, source)
        if scan is not None:
            return scan, name + how
    return None, ""


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
        scan = _acquisition_datetime(headers[0], series_date, source)
        if scan is None:
            raise _NoTime(f"{source}: the first file has no AcquisitionTime (needed by --suv-method autopet)")
        return _ScanTimes([scan] * count, "AcquisitionTime of the series' first file (autoPET conversion)", [])
    series = _combine(series_date, _time(headers[0].get("SeriesTime"), "SeriesTime", source))
    acquisitions = [a for a in (_acquisition_datetime(ds, series_date, source) for ds in headers) if a is not None]
    earliest = min(acquisitions) if acquisitions else None
    if series is not None and (earliest is None or series <= earliest):
        notes = []
        if earliest is not None and (late := (earliest - series).total_seconds()) > LATE_ACQUISITION_S:
            notes.append(f"the earliest AcquisitionDate/Time {earliest.isoformat()} is {late / 3600:.1f} h after "
                         f"SeriesDate/Time {series.isoformat()} (dates shifted unequally?): the series start is "
                         "used, as QIBA's rule has it")
        return _ScanTimes([series] * count, "SeriesDate/SeriesTime", notes)
    why = "SeriesTime is after the acquisition" if series is not None else "no SeriesDate/SeriesTime"
    private, name = _private_scan_start(headers[0], source)
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
    series_date = (_date(first.get("SeriesDate"), "SeriesDate", source)
                   or _date(first.get("AcquisitionDate"), "AcquisitionDate", source))
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
    info = _radiopharmaceutical(first)
    injection = _datetime(info.get("RadiopharmaceuticalStartDateTime"), "RadiopharmaceuticalStartDateTime", source)
    injection_source = "RadiopharmaceuticalStartDateTime"
    start_time = _time(info.get("RadiopharmaceuticalStartTime"), "RadiopharmaceuticalStartTime", source)
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
        injection = _combine(reference.date(), start_time)
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


def check_suv_options(method: str, weight_kg: float | None) -> None:
    """The user's choices, checked before any series is read (InputError)."""
    if method not in SUV_METHODS:
        raise InputError(f"SUV method {method!r}: expected one of {', '.join(SUV_METHODS)}")
    if weight_kg is not None and not (math.isfinite(weight_kg) and weight_kg > 0):
        raise InputError(f"body weight {weight_kg} kg: must be a positive number")


def _corrections(headers: Sequence[Dataset], source: str) -> tuple[tuple[str, ...], str, str, list[str]]:
    """(CorrectedImage, DecayCorrection, Units, notes) of the series, checked."""
    first = headers[0]
    corrected = values_of(first.get("CorrectedImage"))
    decay = _text(first, "DecayCorrection").upper()
    if decay not in ("START", "ADMIN", "NONE"):
        raise InputError(f"{source}: DecayCorrection {decay or 'missing'}: expected START, ADMIN or NONE")
    # Images not decay corrected (NONE) are decay corrected frame by frame here: they need ATTN only.
    needed = ("ATTN",) if decay == "NONE" else ("ATTN", "DECY")
    missing = [flag for flag in needed if flag not in corrected]
    if missing:
        raise InputError(f"{source}: CorrectedImage {list(corrected)} lacks {' and '.join(missing)}: SUV needs "
                         "attenuation- and decay-corrected images")
    notes = []
    if decay == "NONE" and "DECY" in corrected:
        # The manual decides by DecayCorrection, which names the reference time; CorrectedImage does not.
        notes.append(f"DecayCorrection NONE though CorrectedImage {list(corrected)} lists DECY: DecayCorrection "
                     "followed (frames decay corrected here), as the IBSI manual does")
    units = _text(first, "Units").upper()
    if units not in ("BQML", "CNTS", "GML", "CM2ML"):
        raise InputError(f"{source}: Units {units or 'missing'}: SUV needs BQML, CNTS (Philips), GML or CM2ML")
    return corrected, decay, units, notes


def _suv_type(first: Dataset, units: str, source: str) -> str:
    """SUVType (0054,1006) checked against Units: GML holds BW (also when SUVType is absent), LBM, LBMJAMES128,
    LBMJANMA or IBW; CM2ML holds BSA; BQML and CNTS images are not SUV yet."""
    suv_type = _text(first, "SUVType").upper()
    allowed = {"GML": ("BW", "LBM", "LBMJAMES128", "LBMJANMA", "IBW"), "CM2ML": ("BSA",)}.get(units)
    if allowed is None or not suv_type:
        return suv_type or {"GML": "BW", "CM2ML": "BSA"}.get(units, "")
    if suv_type not in allowed:
        raise InputError(f"{source}: Units {units} with SUVType {suv_type}: expected one of {', '.join(allowed)}")
    return suv_type


def _sex_specific(sex: str, male: float, female: float) -> float:
    # The manual: no consensus for sex "O"; the mean of the two sex-specific values.
    return {"M": male, "F": female}.get(sex, (male + female) / 2.0)


def suv_type_normaliser(suv_type: str, weight_kg: float, height_cm: float, sex: str) -> float:
    """The mass (kg) or, for BSA, the area (m^2) that an SUV of ``suv_type`` divides by (the manual's formulas:
    Morgan / James / Janmahasatian lean body mass, ideal body weight, Du Bois body surface area)."""
    ratio = (weight_kg / height_cm) ** 2
    if suv_type == "LBM":
        return _sex_specific(sex, 1.10 * weight_kg - 120 * ratio, 1.07 * weight_kg - 148 * ratio)
    if suv_type == "LBMJAMES128":
        return _sex_specific(sex, 1.10 * weight_kg - 128 * ratio, 1.07 * weight_kg - 148 * ratio)
    if suv_type == "LBMJANMA":
        bmi = weight_kg / (height_cm / 100.0) ** 2
        return _sex_specific(sex, 9270 * weight_kg / (6680 + 216 * bmi), 9270 * weight_kg / (8780 + 244 * bmi))
    if suv_type == "IBW":
        return _sex_specific(sex, 48.0 + 1.06 * (height_cm - 152), 45.5 + 0.91 * (height_cm - 152))
    if suv_type == "BSA":
        return 0.007184 * height_cm ** 0.725 * weight_kg ** 0.425
    raise ValueError(f"no normaliser for SUV type {suv_type!r}")


def _to_suvbw(first: Dataset, units: str, suv_type: str, weight: float, source: str) -> tuple[float, str]:
    """(factor, rule) that turns stored SUV of ``suv_type`` into SUVbw: weight / normaliser (BSA: cm^2 / 1000)."""
    height_m = _positive_number(first.get("PatientSize"))
    sex = _text(first, "PatientSex").upper()
    if height_m is None:
        raise InputError(f"{source}: Units {units} SUVType {suv_type} needs the height to convert to SUVbw; "
                         f"PatientSize is {_text(first, 'PatientSize') or 'missing'!r}")
    low, high = PLAUSIBLE_HEIGHT_M
    if not low <= height_m <= high:  # 175 written for 1.75 m would change the LBM silently
        raise InputError(f"{source}: PatientSize {height_m:g} is not a height in metres ({low:g} to {high:g} m; "
                         f"centimetres written?): SUVType {suv_type} cannot be converted to SUVbw")
    if suv_type != "BSA" and sex not in ("M", "F", "O"):
        raise InputError(f"{source}: Units {units} SUVType {suv_type} needs the sex to convert to SUVbw; "
                         f"PatientSex is {sex or 'missing'!r} (expected M, F or O)")
    normaliser = suv_type_normaliser(suv_type, weight, height_m * 100.0, sex)
    if not (math.isfinite(normaliser) and normaliser > 0):
        raise InputError(f"{source}: SUVType {suv_type} of {weight:g} kg, {height_m:g} m gives no positive "
                         "normaliser: weight or height is wrong")
    if suv_type == "BSA":
        return weight / (10.0 * normaliser), (f"Units CM2ML (SUVbsa): SUVbw = value x weight[kg] x 1000 / "
                                              f"(BSA {normaliser:.4f} m^2 x 10^4 cm^2/m^2), BSA by Du Bois")
    return weight / normaliser, (f"Units GML SUVType {suv_type}: SUVbw = value x weight {weight:g} kg / "
                                 f"{suv_type} {normaliser:.3f} kg (sex {sex}, height {height_m:g} m)")


def _philips_factor(headers: Sequence[Dataset], suv_type: str, source: str) -> tuple[float, str]:
    """The Philips factor (SUV scale factor (7053,1000) first, as QIBA; the activity concentration factor
    (7053,1009) otherwise); the SUV factor only where SUVType is BW or absent (the manual)."""
    choices = [(PHILIPS_ACTIVITY_FACTOR, "(7053,1009)")]
    if suv_type in ("", "BW"):
        choices.insert(0, (PHILIPS_SUV_FACTOR, "(7053,1000)"))
    for element, name in choices:
        found = [_vendor_private(ds, 0x7053, PHILIPS_PET_CREATOR, element, "PHILIPS") for ds in headers]
        values = {_positive_number(value) for value, _ in found}
        if len(values) > 1:
            raise InputError(f"{source}: Philips {name} differs between the images of the series")
        factor = values.pop()
        if factor is not None:
            return factor, f"Philips {name}{found[0][1]}"
    raise InputError(f"{source}: Units CNTS without the Philips SUV factor (7053,1000) or activity "
                     "concentration factor (7053,1009): cannot convert counts to SUV")


def _dose_and_half_life(first: Dataset, source: str) -> tuple[float, float, list[str]]:
    """(dose in Bq, half-life in s, notes): a dose that cannot be Bq (below MBQ_DOSE_BELOW) is MBq."""
    if not first.get("RadiopharmaceuticalInformationSequence"):
        raise InputError(f"{source}: no RadiopharmaceuticalInformationSequence: injected dose unknown")
    info = _radiopharmaceutical(first)
    dose = _positive_number(info.get("RadionuclideTotalDose"))
    half_life = _positive_number(info.get("RadionuclideHalfLife"))
    if dose is None:
        raise InputError(f"{source}: RadionuclideTotalDose {_text(info, 'RadionuclideTotalDose') or 'missing'!r} is "
                         "not a positive number: injected dose unknown")
    if half_life is None:
        raise InputError(f"{source}: RadionuclideHalfLife {_text(info, 'RadionuclideHalfLife') or 'missing'!r} is "
                         "not a positive number")
    notes = []
    if dose < MBQ_DOSE_BELOW:
        notes.append(f"RadionuclideTotalDose {dose:g} cannot be Bq (below {MBQ_DOSE_BELOW:g}): read as MBq, "
                     f"{dose * 1e6:g} Bq")
        dose *= 1e6
    return dose, half_life, notes


def tracer_note(first: Dataset) -> tuple[str | None, str | None]:
    """(the tracer as the header names it, a note when it is not FDG, which the model is trained for)."""
    info = _radiopharmaceutical(first)
    name = _text(info, "Radiopharmaceutical")
    codes = [_text(item, "CodeValue").upper() for item in info.get("RadiopharmaceuticalCodeSequence") or []]
    nuclide = [_text(item, "CodeMeaning") for item in info.get("RadionuclideCodeSequence") or []]
    half_life = _positive_number(info.get("RadionuclideHalfLife"))
    shown_as = name or (nuclide[0] if nuclide else None)
    low, high = F18_HALF_LIFE_S
    if half_life is not None and not low <= half_life <= high:
        return shown_as, (f"radionuclide half-life {half_life:g} s is not F-18's ({shown_as or 'tracer unnamed'}): "
                          "the tracer is not FDG, the model is trained on FDG PET")
    named_fdg = any(word in name.upper().replace("-", "") for word in FDG_NAMES) or any(
        code in FDG_CODES for code in codes)
    if (name or codes) and not named_fdg:
        return shown_as, (f"Radiopharmaceutical {name or codes[0]!r} is not FDG: the model is trained on FDG "
                          "PET")
    return shown_as, None


def _decayed_doses(headers: Sequence[Dataset], method: str, decay: str, dose: float, half_life: float,
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


def _weight(first: Dataset, weight_kg: float | None, source: str) -> tuple[float, str]:
    if weight_kg is not None:
        return weight_kg, "--weight-kg"
    weight = _positive_number(first.get("PatientWeight"))
    if weight is None:
        written = _text(first, "PatientWeight")
        raise InputError(f"{source}: PatientWeight missing or 0{f' ({written!r})' if written else ''}: SUVbw needs "
                         "the body weight; give it with --weight-kg")
    return weight, "PatientWeight"


def suv_conversion(headers: Sequence[Dataset], *, method: SuvMethod = DEFAULT_SUV_METHOD,
                   weight_kg: float | None = None, source: str = "PET series") -> SuvConversion:
    """The SUVbw factor of a PET series from its headers (pixel data not needed).

    ``headers`` are the series' images in file-name order (``autopet`` uses the first one); ``weight_kg``
    overrides PatientWeight. Where the factor differs between frames it is in ``frame_factors``, in the order
    of ``headers``. Every refusal is an InputError naming ``source``.
    """
    check_suv_options(method, weight_kg)
    if not headers:
        raise InputError(f"{source}: no images")
    # The series-level values are checked in every file: a series is one set of values, not its first file's.
    skip = (*(("PatientWeight",) if weight_kg is not None else ()),
            *(BODY_SIZE_ONLY if _text(headers[0], "Units").upper() not in ("GML", "CM2ML") else ()))
    check_series_level(headers, source, skip=skip)
    corrected, decay, units, notes = _corrections(headers, source)
    first = headers[0]
    suv_type = _suv_type(first, units, source)
    tracer, tracer_warning = tracer_note(first)
    base = dict(method=method, units=units, decay_correction=decay, corrected_image=corrected, tracer=tracer,
                notes=(*([tracer_warning] if tracer_warning else []), *notes))
    if units in ("GML", "CM2ML"):
        if suv_type == "BW":
            return SuvConversion(**base, factor=1.0, rule="Units GML: the images are SUVbw already")
        weight, weight_source = _weight(first, weight_kg, source)
        factor, rule = _to_suvbw(first, units, suv_type, weight, source)
        return SuvConversion(**base, factor=factor, rule=rule, weight_kg=weight, weight_source=weight_source,
                             suv_type_factor=factor)
    return _activity_conversion(headers, base, units, suv_type, method, decay, weight_kg, source)


def _activity_conversion(headers: Sequence[Dataset], base: dict, units: str, suv_type: str, method: str,
                         decay: str, weight_kg: float | None, source: str) -> SuvConversion:
    """BQML, or CNTS through a Philips factor: SUVbw = Bq/ml x weight[g] / dose decayed to the images' time."""
    vendor_factor, vendor_source = None, None
    if units == "CNTS":
        vendor_factor, vendor_source = _philips_factor(headers, suv_type, source)
        if vendor_source.startswith("Philips (7053,1000)"):
            return SuvConversion(**base, factor=vendor_factor, vendor_factor=vendor_factor,
                                 vendor_factor_source=vendor_source,
                                 rule="Units CNTS: SUVbw = value x Philips SUV factor (7053,1000)")
    first = headers[0]
    weight, weight_source = _weight(first, weight_kg, source)
    dose, half_life, notes = _dose_and_half_life(first, source)
    decayed, decay_rule, times, more = _decayed_doses(headers, method, decay, dose, half_life, source)
    scale = vendor_factor if vendor_factor is not None else 1.0
    factors = [scale * weight * 1000.0 / frame_dose for frame_dose in decayed]
    if units == "CNTS":
        rule = (f"Units CNTS: SUVbw = value x Philips activity factor (7053,1009) x weight[g] / decayed dose[Bq]; "
                f"{decay_rule}")
    else:
        rule = f"Units BQML: SUVbw = value x weight[g] / decayed dose[Bq]; {decay_rule}"
    uniform = max(factors) == min(factors)
    return SuvConversion(**{**base, "notes": (*base["notes"], *notes, *more)}, factor=factors[0], rule=rule,
                         weight_kg=weight, weight_source=weight_source, injected_dose_bq=dose,
                         half_life_s=half_life, decayed_dose_bq=decayed[0], vendor_factor=vendor_factor,
                         vendor_factor_source=vendor_source, frame_factors=() if uniform else tuple(factors),
                         **times)
