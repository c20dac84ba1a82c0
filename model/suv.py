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
from collections.abc import Sequence
from typing import Literal

from pydicom.dataset import Dataset
from pydicom.valuerep import DA, DT, TM

from model.errors import InputError

SuvMethod = Literal["qiba", "autopet"]
SUV_METHODS: tuple[str, ...] = ("qiba", "autopet")

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


def _date(value: object) -> dt.date | None:
    text = str(value or "").strip().replace(".", "").replace("-", "")  # ACR-NEMA wrote 2002.11.07
    return DA(text) if len(text) == 8 and text.isdigit() else None


def _time(value: object) -> dt.time | None:
    text = str(value or "").strip().replace(":", "")  # ACR-NEMA wrote 10:15:30
    if not text:
        return None
    try:
        return TM(text)
    except ValueError:
        return None


def _datetime(value: object) -> dt.datetime | None:
    """A DT value as naive local time (an offset, when written, describes that same local time)."""
    text = str(value or "").strip()
    if len(text) < 8:
        return None
    try:
        parsed = DT(text)
    except ValueError:
        return None
    return dt.datetime(parsed.year, parsed.month, parsed.day, parsed.hour, parsed.minute, parsed.second,
                       parsed.microsecond)


def _combine(date: dt.date | None, time: dt.time | None) -> dt.datetime | None:
    if date is None or time is None:
        return None
    return dt.datetime.combine(date, dt.time(time.hour, time.minute, time.second, time.microsecond))


def _acquisition_datetime(ds: Dataset, default_date: dt.date) -> dt.datetime | None:
    combined = _datetime(ds.get("AcquisitionDateTime"))
    if combined is not None:
        return combined
    return _combine(_date(ds.get("AcquisitionDate")) or default_date, _time(ds.get("AcquisitionTime")))


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


def _positive_number(value: object) -> float | None:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _same_everywhere(headers: Sequence[Dataset], keyword: str, source: str) -> None:
    values = {_text(ds, keyword).upper() for ds in headers}
    if len(values) > 1:
        raise InputError(f"{source}: {keyword} differs between the images of the series ({sorted(values)})")


def _injection_and_scan(headers: Sequence[Dataset], method: str, half_life_s: float,
                        source: str) -> tuple[dt.datetime, str, dt.datetime, str, list[str]]:
    """(injection time, its source, scan time, its source, notes) by the method's rule."""
    first = headers[0]
    notes: list[str] = []
    series_date = _date(first.get("SeriesDate")) or _date(first.get("AcquisitionDate"))
    if series_date is None:
        series_date = dt.date(1900, 1, 1)  # anonymisers may blank every date: times of day still order
        notes.append("no SeriesDate or AcquisitionDate: times of day only")
    if method == "autopet":
        scan = _acquisition_datetime(first, series_date)
        scan_source = "AcquisitionTime of the series' first file (autoPET conversion)"
        if scan is None:
            raise InputError(f"{source}: the first file has no AcquisitionTime (needed by --suv-method autopet)")
    else:
        series = _combine(series_date, _time(first.get("SeriesTime")))
        acquisitions = [a for a in (_acquisition_datetime(ds, series_date) for ds in headers) if a is not None]
        earliest = min(acquisitions) if acquisitions else None
        if series is not None and (earliest is None or series <= earliest):
            scan, scan_source = series, "SeriesDate/SeriesTime"
        else:
            ge_scan = _datetime(_private_value(first, 0x0009, GE_PET_CREATOR, GE_SCAN_DATETIME))
            if series is not None and ge_scan is not None:
                scan, scan_source = ge_scan, "GE private scan time (0009,100D): SeriesTime is after the acquisition"
            elif earliest is not None:
                scan = earliest
                scan_source = ("earliest AcquisitionDate/Time" if series is None else
                               "earliest AcquisitionDate/Time: SeriesTime is after the acquisition")
            else:
                raise InputError(f"{source}: no SeriesDate/SeriesTime nor AcquisitionDate/Time: no scan time for "
                                 "the decay correction")
    info = first.RadiopharmaceuticalInformationSequence[0]
    injection = _datetime(info.get("RadiopharmaceuticalStartDateTime"))
    injection_source = "RadiopharmaceuticalStartDateTime"
    start_time = _time(info.get("RadiopharmaceuticalStartTime"))
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
            raise InputError(f"{source}: no RadiopharmaceuticalStartDateTime or RadiopharmaceuticalStartTime: "
                             "injection time unknown")
        if injection_source == "RadiopharmaceuticalStartDateTime":
            injection_source = "RadiopharmaceuticalStartTime on the scan's date"
        injection = _combine(scan.date(), start_time)
        if injection > scan:
            injection -= dt.timedelta(days=1)
            notes.append("injection before midnight, scan after it: injection taken on the previous day")
    return injection, injection_source, scan, scan_source, notes


def check_suv_options(method: str, weight_kg: float | None) -> None:
    """The user's choices, checked before any series is read (InputError)."""
    if method not in SUV_METHODS:
        raise InputError(f"SUV method {method!r}: expected one of {', '.join(SUV_METHODS)}")
    if weight_kg is not None and not (math.isfinite(weight_kg) and weight_kg > 0):
        raise InputError(f"body weight {weight_kg} kg: must be a positive number")


def suv_conversion(headers: Sequence[Dataset], *, method: SuvMethod = "qiba", weight_kg: float | None = None,
                   source: str = "PET series") -> SuvConversion:
    """The SUVbw factor of a PET series from its headers (pixel data not needed).

    ``headers`` are the series' images in file-name order (``autopet`` uses the first one); ``weight_kg``
    overrides PatientWeight. Every refusal is an InputError naming ``source``.
    """
    check_suv_options(method, weight_kg)
    if not headers:
        raise InputError(f"{source}: no images")
    first = headers[0]
    for keyword in ("Units", "DecayCorrection", "CorrectedImage"):
        _same_everywhere(headers, keyword, source)
    corrected = tuple(str(v).strip().upper() for v in (first.get("CorrectedImage") or []))
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
    base = dict(method=method, units=units, decay_correction=decay, corrected_image=corrected)
    if units == "GML":
        return SuvConversion(**base, factor=1.0, rule="Units GML: the images are SUVbw already")

    vendor_factor, vendor_source = None, None
    if units == "CNTS":
        for element, name in ((PHILIPS_SUV_FACTOR, "(7053,1000)"), (PHILIPS_ACTIVITY_FACTOR, "(7053,1009)")):
            values = {_positive_number(_private_value(ds, 0x7053, PHILIPS_PET_CREATOR, element)) for ds in headers}
            if len(values) > 1:
                raise InputError(f"{source}: Philips {name} differs between the images of the series")
            vendor_factor = values.pop()
            if vendor_factor is not None:
                vendor_source = f"Philips {name}"
                break
        if vendor_factor is None:
            raise InputError(f"{source}: Units CNTS without the Philips SUV factor (7053,1000) or activity "
                             "concentration factor (7053,1009): cannot convert counts to SUV")
        if vendor_source == "Philips (7053,1000)":
            return SuvConversion(**base, factor=vendor_factor, vendor_factor=vendor_factor,
                                 vendor_factor_source=vendor_source,
                                 rule="Units CNTS: SUVbw = value x Philips SUV factor (7053,1000)")

    weight_source = "--weight-kg" if weight_kg is not None else "PatientWeight"
    weight = weight_kg if weight_kg is not None else _positive_number(first.get("PatientWeight"))
    if weight is None:
        raise InputError(f"{source}: PatientWeight missing or 0: SUVbw needs the body weight; "
                         "give it with --weight-kg")
    sequence = first.get("RadiopharmaceuticalInformationSequence")
    if not sequence:
        raise InputError(f"{source}: no RadiopharmaceuticalInformationSequence: injected dose unknown")
    dose = _positive_number(sequence[0].get("RadionuclideTotalDose"))
    half_life = _positive_number(sequence[0].get("RadionuclideHalfLife"))
    if dose is None:
        raise InputError(f"{source}: RadionuclideTotalDose missing or 0: injected dose unknown")
    if half_life is None:
        raise InputError(f"{source}: RadionuclideHalfLife missing or 0")

    times: dict = {}
    if decay == "ADMIN":
        decayed = dose
        decay_rule = "DecayCorrection ADMIN: images decay corrected to the injection, dose not decayed"
        notes: list[str] = []
    else:
        injection, injection_source, scan, scan_source, notes = _injection_and_scan(headers, method, half_life,
                                                                                     source)
        decay_s = (scan - injection).total_seconds()
        if decay_s < 0:
            raise InputError(f"{source}: scan time {scan.isoformat()} ({scan_source}) is before the injection "
                             f"{injection.isoformat()} ({injection_source}): negative decay time")
        if decay_s > MAX_HALF_LIVES * half_life:
            raise InputError(f"{source}: {decay_s / 3600:.1f} h from injection {injection.isoformat()} to scan "
                             f"{scan.isoformat()}, over {MAX_HALF_LIVES:.0f} half-lives: dates or times are wrong")
        decayed = dose * 2.0 ** (-decay_s / half_life)
        times = dict(injection_time=injection.isoformat(), injection_time_source=injection_source,
                     scan_time=scan.isoformat(), scan_time_source=scan_source, decay_time_s=decay_s)
        decay_rule = f"dose decayed over {decay_s:.0f} s from injection to {scan_source}"
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
