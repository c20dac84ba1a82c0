"""Two files for one image: copies of one export (several files of one SOPInstanceUID, as when an export is
copied into a folder twice or re-exported with other settings) and several images at one slice position.

Identical copies are dropped with a note. Copies that differ in their pixels or in any header that the
geometry or the SUV reads (``COMPARED``) make the series ambiguous: which one the scanner wrote cannot be told,
and taking either silently changes the volume or its SUV (Units BQML in one copy and CNTS in another; a slice
whose values are 20 times its twin's doubled the lesions found), so the series is refused, naming the files.
"""

from __future__ import annotations

import filecmp
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from model.errors import describe, shown

# What studies.dicom reads for the geometry and studies.suv for the SUV (studies.dicom.scan.NEEDED, which also names
# the SEG's), less what does not decide a value: the file meta group, descriptions, the instance's own number.
NOT_COMPARED = frozenset({"TransferSyntaxUID", "MediaStorageSOPClassUID", "StudyDescription", "SeriesDescription",
                          "InstanceNumber", "SOPInstanceUID"})
# Private groups the SUV reads (studies.suv): GE's scan time (0009,100D), Philips' factors (7053,1000/1009).
PRIVATE_GROUPS = (0x0009, 0x7053)


def compared_keywords(needed: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(needed) - NOT_COMPARED))


def _private(ds: Dataset, group: int) -> dict:
    return {element.tag: element.value for element in ds if element.tag.group == group}


def _shown_value(value: object) -> str:
    text = "(missing)" if value is None else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def header_differences(first: Dataset, second: Dataset, keywords: Sequence[str]) -> list[str]:
    """The headers among ``keywords`` (and the SUV's private groups) in which two images differ, as
    ``Keyword ('a' / 'b')``; numbers compare as numbers (DS "75" and "75.0" agree)."""
    found = []
    for keyword in keywords:
        a, b = first.get(keyword), second.get(keyword)
        if a != b:
            found.append(f"{keyword} ({_shown_value(a)!r} / {_shown_value(b)!r})")
    found += [f"private group ({group:04X},xxxx)" for group in PRIVATE_GROUPS
              if _private(first, group) != _private(second, group)]
    return found


def same_stored_pixels(first: Path, second: Path, read: Callable[[Path], Dataset]) -> tuple[bool, str]:
    """Whether two files of one image hold the same stored pixel values (raw bytes in one transfer syntax,
    else decoded); (False, why) when either cannot be read or decoded."""
    try:
        a, b = read(first), read(second)
        syntax = (getattr(a.file_meta, "TransferSyntaxUID", None), getattr(b.file_meta, "TransferSyntaxUID", None))
        if syntax[0] == syntax[1] and a.get("PixelData") == b.get("PixelData"):
            return True, ""
        return bool(np.array_equal(a.pixel_array, b.pixel_array)), "pixel data"
    except Exception as error:  # any failure to read or decode: the two cannot be told equal
        return False, f"pixel data (cannot be compared: {describe(error)[:80]})"


def copy_differences(kept: tuple[Path, Dataset], copy: tuple[Path, Dataset], keywords: Sequence[str],
                     read: Callable[[Path], Dataset]) -> list[str]:
    """How a copy of an image (one SOPInstanceUID) differs from the copy kept: [] for identical copies."""
    try:
        if filecmp.cmp(kept[0], copy[0], shallow=False):
            return []
    except OSError as error:  # gone or unreadable since the scan read its header: not known to be the same
        return [f"file contents (cannot be compared: {describe(error)[:80]})"]
    found = header_differences(kept[1], copy[1], keywords)
    if not found:
        same, why = same_stored_pixels(kept[0], copy[0], read)
        found = [] if same else [why]
    return found


def ambiguity(kept: Path, copy: Path, instance: str, found: Sequence[str]) -> str:
    """Why two copies of one image make its series ambiguous, in words."""
    return (f"{shown(kept)} and {shown(copy)} are copies of one image (SOPInstanceUID {instance}) that differ in "
            f"{', '.join(found[:3])}: which copy is the scan cannot be told")
