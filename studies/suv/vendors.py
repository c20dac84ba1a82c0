"""Vendors' private elements the SUV reads: GE's (0009,100D) and Siemens' (0071,1022) scan start, Philips'
(7053,1000) SUV and (7053,1009) activity concentration factors; found by their private creator, or (as the IBSI
manual reads them) by their tag where an export dropped the creator and Manufacturer is the vendor."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from pydicom.dataset import Dataset

from model.errors import InputError
from studies.suv.headers import parse_datetime, positive_number, text_of

GE_PET_CREATOR = "GEMS_PETD_01"
GE_SCAN_DATETIME = 0x0D  # (0009,100D): GE's scan start, kept when a series is re-created later
PHILIPS_PET_CREATOR = "Philips PET Private Group"
PHILIPS_SUV_FACTOR = 0x00  # (7053,1000): CNTS to SUVbw
PHILIPS_ACTIVITY_FACTOR = 0x09  # (7053,1009): CNTS to Bq/ml
SIEMENS_PET_CREATOR = "SIEMENS MED PT"
SIEMENS_SCAN_DATETIME = 0x22  # (0071,1022): Siemens' decay correction (scan start) date and time


def private_value(ds: Dataset, group: int, creator: str, element: int) -> object | None:
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
    words = "".join(ch if ch.isalnum() else " " for ch in text_of(ds, "Manufacturer").upper()).split()
    return vendor.upper() in words or (vendor.upper() == "GE" and "GEMS" in words)


def _vendor_private(ds: Dataset, group: int, creator: str, element: int, vendor: str) -> tuple[object | None, str]:
    """(value, how it was found) of a vendor's private element. Exports that drop the private creator
    (gggg,0010) keep the element at (gggg,10xx), and the manual reads it by that tag: so does this, only where
    no creator reserves that block and the Manufacturer is the vendor."""
    value = private_value(ds, group, creator, element)
    if value is not None:
        return value, ""
    if (group << 16 | 0x0010) in ds or not made_by(ds, vendor):
        return None, ""
    value = _element_value(ds, group << 16 | 0x1000 | element)
    return value, "" if value is None else f" (no private creator: read at ({group:04X},{0x1000 | element:04X}))"


def philips_factor(headers: Sequence[Dataset], suv_type: str, source: str) -> tuple[float, str]:
    """The Philips factor (SUV scale factor (7053,1000) first, as QIBA; the activity concentration factor
    (7053,1009) otherwise); the SUV factor only where SUVType is BW or absent (the manual)."""
    choices = [(PHILIPS_ACTIVITY_FACTOR, "(7053,1009)")]
    if suv_type in ("", "BW"):
        choices.insert(0, (PHILIPS_SUV_FACTOR, "(7053,1000)"))
    for element, name in choices:
        found = [_vendor_private(ds, 0x7053, PHILIPS_PET_CREATOR, element, "PHILIPS") for ds in headers]
        values = {positive_number(value) for value, _ in found}
        if len(values) > 1:
            raise InputError(f"{source}: Philips {name} differs between the images of the series")
        factor = values.pop()
        if factor is not None:
            return factor, f"Philips {name}{found[0][1]}"
    raise InputError(f"{source}: Units CNTS without the Philips SUV factor (7053,1000) or activity "
                     "concentration factor (7053,1009): cannot convert counts to SUV")


def private_scan_start(first: Dataset, source: str) -> tuple[dt.datetime | None, str]:
    """GE's (0009,100D) or Siemens' (0071,1022) scan start, the manual's first choice when SeriesTime is not."""
    for group, creator, element, vendor in ((0x0009, GE_PET_CREATOR, GE_SCAN_DATETIME, "GE"),
                                            (0x0071, SIEMENS_PET_CREATOR, SIEMENS_SCAN_DATETIME, "SIEMENS")):
        value, how = _vendor_private(first, group, creator, element, vendor)
        name = f"{vendor} private scan time ({group:04X},{0x1000 | element:04X})"
        scan = parse_datetime(value, name, source)
        if scan is not None:
            return scan, name + how
    return None, ""
