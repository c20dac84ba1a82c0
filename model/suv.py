"""SUV (body weight) of a PET series from its DICOM headers.

``qiba`` follows QIBA's vendor-neutral algorithm (as OHIF's calculate-suv implements it): the dose is decayed
from injection to the scan start. ``autopet`` reproduces the conversion the autoPET NIfTI data were made with
(and so the scale the model learned): the dose decayed to the AcquisitionTime of the series' first file. Both
share every check; they differ only in the time the dose is decayed to.
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
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """JSON-ready: the block written to suv.json and into the report."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


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
    tag = block.get_tag(element)
    if tag not in ds:
        return None
    value = ds[tag].value
    return value.decode("ascii", errors="replace").strip("\x00 ") if isinstance(value, bytes) else value


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
)


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


@dataclasses.dataclass
class _Times:
    injection: dt.datetime
    injection_source: str
    scan: dt.datetime
    scan_source: str
    notes: list[str]


class _NoTime(InputError):
    """A time the decay needs is missing (not malformed): under DecayCorrection ADMIN the decay needs none."""


def _scan_time(headers: Sequence[Dataset], method: str, series_date: dt.date, half_life_s: float,
               source: str) -> tuple[dt.datetime, str]:
    first = headers[0]
    if method == "autopet":
        scan = _acquisition_datetime(first, series_date, source)
        if scan is None:
            raise _NoTime(f"{source}: the first file has no AcquisitionTime (needed by --suv-method autopet)")
        return scan, "AcquisitionTime of the series' first file (autoPET conversion)"
    series = _combine(series_date, _time(first.get("SeriesTime"), "SeriesTime", source))
    acquisitions = [a for a in (_acquisition_datetime(ds, series_date, source) for ds in headers) if a is not None]
    earliest = min(acquisitions) if acquisitions else None
    late = series is not None and earliest is not None and (earliest - series).total_seconds()
    if late and late > MAX_HALF_LIVES * half_life_s:
        # An acquisition long after its own series (calculate-suv refuses such a date as unparseable).
        raise InputError(f"{source}: AcquisitionDate/Time {earliest.isoformat()} is over {MAX_HALF_LIVES:.0f} "
                         f"half-lives after SeriesDate/SeriesTime {series.isoformat()}: dates or times are wrong")
    if series is not None and (earliest is None or series <= earliest):
        return series, "SeriesDate/SeriesTime"
    ge_scan = _datetime(_private_value(first, 0x0009, GE_PET_CREATOR, GE_SCAN_DATETIME), "GE (0009,100D)", source)
    if series is not None and ge_scan is not None:
        return ge_scan, "GE private scan time (0009,100D): SeriesTime is after the acquisition"
    if earliest is not None:
        return earliest, ("earliest AcquisitionDate/Time" if series is None else
                          "earliest AcquisitionDate/Time: SeriesTime is after the acquisition")
    raise _NoTime(f"{source}: no SeriesDate/SeriesTime nor AcquisitionDate/Time: no scan time for the decay "
                  "correction")


def _injection_and_scan(headers: Sequence[Dataset], method: str, half_life_s: float, source: str) -> _Times:
    """Injection and scan times (with their sources and notes) by the method's rule; _NoTime when one is
    missing, InputError when one is malformed."""
    first = headers[0]
    notes: list[str] = []
    series_date = (_date(first.get("SeriesDate"), "SeriesDate", source)
                   or _date(first.get("AcquisitionDate"), "AcquisitionDate", source))
    if series_date is None:
        series_date = dt.date(1900, 1, 1)  # anonymisers may blank every date: times of day still order
        notes.append("no SeriesDate or AcquisitionDate: times of day only")
    scan, scan_source = _scan_time(headers, method, series_date, half_life_s, source)
    info = _radiopharmaceutical(first)
    injection = _datetime(info.get("RadiopharmaceuticalStartDateTime"), "RadiopharmaceuticalStartDateTime", source)
    injection_source = "RadiopharmaceuticalStartDateTime"
    start_time = _time(info.get("RadiopharmaceuticalStartTime"), "RadiopharmaceuticalStartTime", source)
    if injection is not None:
        hours = (scan - injection).total_seconds() / 3600.0
        if not 0 <= hours * 3600.0 <= MAX_HALF_LIVES * half_life_s and injection.date() != scan.date():
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
        injection = _combine(scan.date(), start_time)
        if injection > scan:
            injection -= dt.timedelta(days=1)
            notes.append("injection before midnight, scan after it: injection taken on the previous day")
    return _Times(injection, injection_source, scan, scan_source, notes)


def _checked_decay(times: _Times, half_life_s: float, source: str) -> float:
    """Seconds from injection to scan; a scan before the injection, or too long after it, is refused: the
    dates or times (or the patient) are wrong, whether or not the dose is decayed."""
    decay_s = (times.scan - times.injection).total_seconds()
    if decay_s < 0:
        raise InputError(f"{source}: scan time {times.scan.isoformat()} ({times.scan_source}) is before the "
                         f"injection {times.injection.isoformat()} ({times.injection_source}): negative decay time")
    if decay_s > MAX_HALF_LIVES * half_life_s:
        raise InputError(f"{source}: {decay_s / 3600:.1f} h from injection {times.injection.isoformat()} to scan "
                         f"{times.scan.isoformat()}, over {MAX_HALF_LIVES:.0f} half-lives: dates or times are wrong")
    return decay_s


def check_suv_options(method: str, weight_kg: float | None) -> None:
    """The user's choices, checked before any series is read (InputError)."""
    if method not in SUV_METHODS:
        raise InputError(f"SUV method {method!r}: expected one of {', '.join(SUV_METHODS)}")
    if weight_kg is not None and not (math.isfinite(weight_kg) and weight_kg > 0):
        raise InputError(f"body weight {weight_kg} kg: must be a positive number")


def _corrections(headers: Sequence[Dataset], source: str) -> tuple[tuple[str, ...], str, str]:
    """(CorrectedImage, DecayCorrection, Units) of the series, checked."""
    first = headers[0]
    corrected = values_of(first.get("CorrectedImage"))
    missing = [flag for flag in ("ATTN", "DECY") if flag not in corrected]
    if missing:
        raise InputError(f"{source}: CorrectedImage {list(corrected)} lacks {' and '.join(missing)}: SUV needs "
                         "attenuation- and decay-corrected images")
    decay = _text(first, "DecayCorrection").upper()
    if decay == "NONE":
        raise InputError(f"{source}: DecayCorrection NONE (images not decay corrected) is not supported")
    if decay not in ("START", "ADMIN"):
        raise InputError(f"{source}: DecayCorrection {decay or 'missing'}: expected START or ADMIN")
    units = _text(first, "Units").upper()
    if units not in ("BQML", "CNTS", "GML"):
        raise InputError(f"{source}: Units {units or 'missing'}: SUV needs BQML, CNTS (Philips) or GML")
    return corrected, decay, units


def _philips_factor(headers: Sequence[Dataset], source: str) -> tuple[float, str]:
    for element, name in ((PHILIPS_SUV_FACTOR, "(7053,1000)"), (PHILIPS_ACTIVITY_FACTOR, "(7053,1009)")):
        values = {_positive_number(_private_value(ds, 0x7053, PHILIPS_PET_CREATOR, element)) for ds in headers}
        if len(values) > 1:
            raise InputError(f"{source}: Philips {name} differs between the images of the series")
        factor = values.pop()
        if factor is not None:
            return factor, f"Philips {name}"
    raise InputError(f"{source}: Units CNTS without the Philips SUV factor (7053,1000) or activity "
                     "concentration factor (7053,1009): cannot convert counts to SUV")


def _dose_and_half_life(first: Dataset, source: str) -> tuple[float, float]:
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
    return dose, half_life


def _decayed_dose(headers: Sequence[Dataset], method: str, decay: str, dose: float, half_life: float,
                  source: str) -> tuple[float, str, dict, list[str]]:
    """(decayed dose, the rule's words, the times for SuvConversion, notes)."""
    if decay == "ADMIN":
        rule = "DecayCorrection ADMIN: images decay corrected to the injection, dose not decayed"
        try:
            times = _injection_and_scan(headers, method, half_life, source)
        except _NoTime:
            return dose, rule, {}, ["DecayCorrection ADMIN: injection or scan time missing, their order unchecked"]
        _checked_decay(times, half_life, source)  # no decay applied, but a scan before the injection is wrong
        return dose, rule, dict(injection_time=times.injection.isoformat(), injection_time_source=
                                times.injection_source, scan_time=times.scan.isoformat(),
                                scan_time_source=times.scan_source), times.notes
    times = _injection_and_scan(headers, method, half_life, source)
    decay_s = _checked_decay(times, half_life, source)
    recorded = dict(injection_time=times.injection.isoformat(), injection_time_source=times.injection_source,
                    scan_time=times.scan.isoformat(), scan_time_source=times.scan_source, decay_time_s=decay_s)
    rule = f"dose decayed over {decay_s:.0f} s from injection to {times.scan_source}"
    return dose * 2.0 ** (-decay_s / half_life), rule, recorded, times.notes


def suv_conversion(headers: Sequence[Dataset], *, method: SuvMethod = DEFAULT_SUV_METHOD,
                   weight_kg: float | None = None, source: str = "PET series") -> SuvConversion:
    """The SUVbw factor of a PET series from its headers (pixel data not needed).

    ``headers`` are the series' images in file-name order (``autopet`` uses the first one); ``weight_kg``
    overrides PatientWeight. Every refusal is an InputError naming ``source``.
    """
    check_suv_options(method, weight_kg)
    if not headers:
        raise InputError(f"{source}: no images")
    # The series-level values are checked in every file: a series is one set of values, not its first file's.
    check_series_level(headers, source, skip=("PatientWeight",) if weight_kg is not None else ())
    corrected, decay, units = _corrections(headers, source)
    base = dict(method=method, units=units, decay_correction=decay, corrected_image=corrected)
    if units == "GML":
        return SuvConversion(**base, factor=1.0, rule="Units GML: the images are SUVbw already")
    vendor_factor, vendor_source = None, None
    if units == "CNTS":
        vendor_factor, vendor_source = _philips_factor(headers, source)
        if vendor_source == "Philips (7053,1000)":
            return SuvConversion(**base, factor=vendor_factor, vendor_factor=vendor_factor,
                                 vendor_factor_source=vendor_source,
                                 rule="Units CNTS: SUVbw = value x Philips SUV factor (7053,1000)")
    first = headers[0]
    weight_source = "--weight-kg" if weight_kg is not None else "PatientWeight"
    weight = weight_kg if weight_kg is not None else _positive_number(first.get("PatientWeight"))
    if weight is None:
        written = _text(first, "PatientWeight")
        raise InputError(f"{source}: PatientWeight missing or 0{f' ({written!r})' if written else ''}: SUVbw needs "
                         "the body weight; give it with --weight-kg")
    dose, half_life = _dose_and_half_life(first, source)
    decayed, decay_rule, times, notes = _decayed_dose(headers, method, decay, dose, half_life, source)
    bqml_factor = weight * 1000.0 / decayed
    if units == "CNTS":
        factor = vendor_factor * bqml_factor
        rule = (f"Units CNTS: SUVbw = value x Philips activity factor (7053,1009) x weight[g] / decayed dose[Bq]; "
                f"{decay_rule}")
    else:
        factor = bqml_factor
        rule = f"Units BQML: SUVbw = value x weight[g] / decayed dose[Bq]; {decay_rule}"
    return SuvConversion(**base, factor=factor, rule=rule, weight_kg=weight, weight_source=weight_source,
                         injected_dose_bq=dose, half_life_s=half_life, decayed_dose_bq=decayed,
                         vendor_factor=vendor_factor, vendor_factor_source=vendor_source, notes=tuple(notes),
                         **times)
