"""Reading a PET header's values for the SUV: text, multi-valued strings, numbers, the radiopharmaceutical item,
and the one parser of DICOM dates, times and date-times (a value that does not parse, or a year outside
DICOM_YEARS, is refused in one line)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable

from pydicom.dataset import Dataset
from pydicom.valuerep import DT, TM

from model.errors import InputError


def text_of(ds: Dataset, keyword: str) -> str:
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


def parse_date(value: object, keyword: str, source: str) -> dt.date | None:
    """A DA value; None when empty; a value that is no date, or not a plausible one, is refused (it would
    silently change the decay). The one parser of DICOM dates."""
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


def parse_time(value: object, keyword: str, source: str) -> dt.time | None:
    text = str(value or "").strip().replace(":", "")  # ACR-NEMA wrote 10:15:30
    if not text:
        return None
    try:
        return TM(text)
    except (ValueError, TypeError, OverflowError):
        raise InputError(f"{source}: {keyword} {str(value).strip()!r} is not a time (HHMMSS.FFFFFF)") from None


def parse_datetime(value: object, keyword: str, source: str) -> dt.datetime | None:
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


def combine_date_time(date: dt.date | None, time: dt.time | None) -> dt.datetime | None:
    if date is None or time is None:
        return None
    return dt.datetime.combine(date, dt.time(time.hour, time.minute, time.second, time.microsecond))


def acquisition_datetime(ds: Dataset, default_date: dt.date, source: str) -> dt.datetime | None:
    combined = parse_datetime(ds.get("AcquisitionDateTime"), "AcquisitionDateTime", source)
    if combined is not None:
        return combined
    date = parse_date(ds.get("AcquisitionDate"), "AcquisitionDate", source) or default_date
    return combine_date_time(date, parse_time(ds.get("AcquisitionTime"), "AcquisitionTime", source))


def number_of(value: object) -> float | None:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def positive_number(value: object) -> float | None:
    number = number_of(value)
    return number if number is not None and number > 0 else None


def radiopharmaceutical(ds: Dataset) -> Dataset:
    sequence = ds.get("RadiopharmaceuticalInformationSequence")
    return sequence[0] if sequence else Dataset()
