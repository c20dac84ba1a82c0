"""Finding the studies of a DICOM folder and its image series, numbered as a listing of choices shows them
(choosing each study's PET and CT among them: studies.dicom.choice).

Exports are taken as they come: a file or folder that cannot be read is skipped with one warning line (and
the series it belonged to, when known, is refused as incomplete); a header value that does not parse is its
study's one-line error, never a traceback.
"""

from __future__ import annotations

import os
import re
import struct
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError

from model.errors import InputError, describe, one_line, shown
from studies.dicom.duplicates import ambiguity, compared_keywords, copy_differences
from studies.readers import is_image_name
from studies.suv.headers import values_of

PET_STORAGE = {"1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.5.1.4.1.1.130", "1.2.840.10008.5.1.4.1.1.128.1"}
CT_STORAGE = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"}
DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"  # DICOMDIR
# What pydicom raises on a file that is not DICOM after all, a truncated one or a damaged element (an unknown
# VR, a length past the end, a value that cannot be converted).
UNREADABLE = (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError, IndexError,
              struct.error, NotImplementedError, BytesLengthException, OverflowError, UnicodeError, RecursionError)
# Elements this reader, the SUV and the SEG use: a file where one of them is damaged is unreadable; any other
# damaged element is dropped from its header with a warning.
NEEDED = frozenset({
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "PatientID", "StudyDate",
    "StudyDescription", "SeriesDescription", "FrameOfReferenceUID", "ImageType", "CorrectedImage", "SeriesType",
    "NumberOfFrames", "ImageOrientationPatient", "ImagePositionPatient", "InstanceNumber", "PixelSpacing",
    "Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "PhotometricInterpretation", "RescaleSlope", "RescaleIntercept", "FrameReferenceTime", "TriggerTime",
    "TemporalPositionIndex", "NumberOfSlices", "Units", "DecayCorrection", "PatientWeight", "SeriesDate",
    "SeriesTime", "AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime", "RadiopharmaceuticalInformationSequence",
    "RadiopharmaceuticalStartTime", "RadiopharmaceuticalStartDateTime", "RadionuclideTotalDose",
    "RadionuclideHalfLife", "TransferSyntaxUID", "MediaStorageSOPClassUID", "GantryDetectorTilt"})
# Files an export holds beside its images, skipped quietly; any other file that is not DICOM is a warning line
# (a DICOM file whose preamble was damaged must not vanish unnoticed).
NOT_IMAGES = frozenset({".txt", ".xml", ".htm", ".html", ".pdf", ".jpg", ".jpeg", ".png", ".gif", ".bmp", ".json",
                        ".csv", ".ini", ".log", ".exe", ".dll", ".inf", ".js", ".css", ".md", ".zip", ".cfg"})
# Time stamps that tell the frames of a dynamic or gated series apart at one position.
TEMPORAL = ("FrameReferenceTime", "TriggerTime", "TemporalPositionIndex")
Warn = Callable[[str], None]


def print_warning(message: str) -> None:
    print(f"warning: {one_line(message)}", file=sys.stderr, flush=True)


@dataclass
class Series:
    """One series of a scan: its identity and the headers (no pixel data) of its files."""

    uid: str
    modality: str
    sop_class: str
    description: str
    frame_of_reference: str
    files: list[Path] = field(default_factory=list)
    headers: list[Dataset] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # files of this series that could not be read
    notes: list[str] = field(default_factory=list)  # what a user should know about its files (kept, dropped)
    number: int = 0  # its place in the folder's listing (scan_folder): --pet-series / --ct-series may give it
    ambiguous: list[str] = field(default_factory=list)  # copies of one image that differ (studies.dicom.duplicates)

    @property
    def first(self) -> Dataset:
        return self.headers[0]

    @property
    def is_localizer(self) -> bool:
        return all("LOCALIZER" in upper_values(ds.get("ImageType")) for ds in self.headers)

    @property
    def corrected_image(self) -> tuple[str, ...]:
        return upper_values(self.first.get("CorrectedImage"))

    @property
    def folder(self) -> Path:
        """The folder that holds its files (their common parent), for messages."""
        parents = {p.parent for p in self.files}
        return parents.pop() if len(parents) == 1 else Path(*_common_parts([p.parent for p in self.files]))

    @property
    def where(self) -> str:
        return f"{shown(self.folder)}: series {self.uid}"

    def label(self) -> str:
        """How a message names the series: UID, description, slice count."""
        return f"{self.uid} '{self.description}' ({len(self.files)} {self.modality} images)"

    def choice_label(self) -> str:
        """How a list to choose from names the series: its number, modality, description, date, images, UID."""
        first = self.first
        day = str(first.get("SeriesDate") or first.get("AcquisitionDate") or first.get("StudyDate") or "")
        clock = str(first.get("SeriesTime") or first.get("AcquisitionTime") or "")
        when = " ".join(part for part in (f"{day[:4]}-{day[4:6]}-{day[6:8]}" if len(day) == 8 else day,
                                          f"{clock[:2]}:{clock[2:4]}" if len(clock) >= 4 else "") if part)
        return (f"[{self.number}] {self.modality} '{self.description}' {when or 'no date'}, {len(self.files)} "
                f"images, {self.uid}")

    def dynamic_or_gated(self) -> str | None:
        """Why this PET series is not one static volume, or None; InputError when its images disagree.

        From every header: SeriesType DYNAMIC or GATED, or several images at one position told apart by a time
        (FrameReferenceTime, TriggerTime, TemporalPositionIndex). Never from NumberOfTimeSlices and the like:
        GE writes NumberOfTimeSlices per bed in a static multi-bed series (1 to 6 across one series).
        """
        kinds = Counter(upper_values(ds.get("SeriesType"))[:1] for ds in self.headers)
        if len(kinds) > 1:
            listing = ", ".join(f"{'/'.join(k) or 'missing'} in {n} file{'s' * (n > 1)}"
                                for k, n in kinds.most_common())
            raise InputError(f"{self.where}: SeriesType differs between the images of the series ({listing}): "
                             "static or dynamic cannot be told")
        kind = next(iter(kinds))
        if kind and kind[0] in ("DYNAMIC", "GATED"):
            return f"a {kind[0].lower()} PET series (SeriesType {kind[0]})"
        by_position: dict[tuple, set[tuple]] = {}
        for path, ds in zip(self.files, self.headers, strict=True):
            if "LOCALIZER" in upper_values(ds.get("ImageType")):
                continue
            position = tuple(np.round(header_numbers(ds, "ImagePositionPatient", 3, path, self.uid), 2))
            by_position.setdefault(position, set()).add(tuple(upper_values(ds.get(k)) for k in TEMPORAL))
        timed = [times for times in by_position.values() if len(times) > 1]
        if timed:
            frames = max(len(times) for times in timed)
            return (f"a dynamic or gated PET series ({len(timed)} of {len(by_position)} positions imaged up to "
                    f"{frames} times, told apart by {'/'.join(TEMPORAL)})")
        return None


@dataclass
class Study:
    uid: str
    patient_id: str
    date: str
    description: str
    series: dict[str, Series] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # files of the export skipped beside this study's
    conflicts: list[str] = field(default_factory=list)  # study-level values its files disagree on

    @property
    def folder_name(self) -> str:
        """``<patient>/<study UID>``: the Patient/Study layout of the autoPET data that ``train prepare`` reads."""
        return f"{_safe_name(self.patient_id) or 'patient'}/{_safe_name(self.uid) or 'study'}"

    @property
    def case_name(self) -> str:
        """A file-name-safe case name: patient, study date, and the study UID's last digits."""
        tail = _safe_name(self.uid.replace(".", ""))[-8:]
        return "_".join(p for p in (_safe_name(self.patient_id), _safe_name(self.date), tail) if p) or "study"

    def label(self) -> str:
        return f"study {self.uid} (patient {self.patient_id or '?'}, {self.date or 'no date'})"



def header_numbers(ds: Dataset, keyword: str, count: int, path: Path, series_uid: str) -> np.ndarray:
    """``count`` finite numbers from a header, or InputError naming the file, the tag and what it holds."""
    value = ds.get(keyword)
    if isinstance(value, str | bytes):
        value = str(value).split("\\")  # pydicom keeps a value it could not convert as its text
    values = [] if value is None else list(value) if isinstance(value, Iterable) else [value]
    try:
        numbers = np.array([float(v) for v in values], dtype=float)
    except (TypeError, ValueError, OverflowError):
        numbers = np.array([])
    if len(numbers) != count or not np.all(np.isfinite(numbers)):
        written = "missing" if value is None else repr("\\".join(str(v) for v in values))
        raise InputError(f"{shown(path)}: series {series_uid}: {keyword} {written} is not {count} number"
                         f"{'s' * (count > 1)}")
    return numbers


def upper_values(value: object) -> tuple[str, ...]:
    return values_of(value)  # one way of reading multi-valued strings, shared with studies.suv


def _common_parts(paths: list[Path]) -> list[str]:
    parts = list(paths[0].parts)
    for path in paths[1:]:
        keep = 0
        while keep < min(len(parts), len(path.parts)) and parts[keep] == path.parts[keep]:
            keep += 1
        parts = parts[:keep]
    return parts or ["."]


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text or "").strip("_.")


def dcmread(path: Path, **options) -> Dataset:
    with warnings.catch_warnings():
        # pydicom warns about every value a vendor wrote loosely (DS with too many digits, odd UIDs): noise for
        # a user; what matters is checked where it is used.
        warnings.simplefilter("ignore", UserWarning)
        return pydicom.dcmread(path, **options)


def _looks_like_dicom(path: Path) -> bool:
    """A preamble with DICM, or (old exports, no preamble) a first element of group 0008 or 0002."""
    with open(path, "rb") as handle:
        head = handle.read(132)
    return head[128:132] == b"DICM" or head[:2] in (b"\x08\x00", b"\x02\x00")


def _drop_damaged(ds: Dataset, remarks: list[str]) -> list[tuple[str, str]]:
    """Convert every element now (pydicom converts lazily, and a damaged one would raise wherever it is first
    read); damaged ones are removed. Returns (keyword, why) of each, nested ones as ``Sequence>Keyword``;
    pydicom's warnings about an element (a value longer than its VR allows) go to ``remarks`` as
    ``Keyword: text``, since pydicom's own text names neither the element nor the file."""
    with warnings.catch_warnings(record=True) as caught:  # one per file: the cost of a scan stays that of the read
        warnings.simplefilter("always")
        return _convert_elements(ds, caught, remarks, "")


def _convert_elements(ds: Dataset, caught: list, remarks: list[str], prefix: str) -> list[tuple[str, str]]:
    damaged = []
    for tag in list(ds.keys()):
        name = prefix + (keyword_for_tag(tag) or str(tag))
        before = len(caught)  # the warnings recorded from here on are this element's
        try:
            element = ds[tag]
            items = list(element.value) if element.VR == "SQ" else []
            str(element.value)  # multi-values and numbers are converted here
        except UNREADABLE as error:
            damaged.append((name, describe(error)[:80]))
            del ds[tag]
            continue
        finally:
            remarks += [f"{name}: {one_line(remark.message)}" for remark in caught[before:]]
        for item in items:
            damaged += _convert_elements(item, caught, remarks, f"{name}>")
    return damaged


def _remark_lines(remarks: dict[tuple[str, str], list[Path]]) -> list[str]:
    """One warning line per (series, remark): the first file it is about and how many others of its series."""
    lines = []
    for (series_uid, remark), paths in remarks.items():
        others = f" and {len(paths) - 1} other file{'s' * (len(paths) > 2)} of series {series_uid}" \
            if len(paths) > 1 else ""
        lines.append(f"{shown(paths[0])}{others}: {remark}")
    return lines


def _read_header(path: Path, remarks: list[str] | None = None) -> tuple[Dataset | None, str | None, list[str]]:
    """(header, None, damaged elements dropped) of a DICOM file; (None, None, []) for a file that is not DICOM;
    (header or None, why it is unusable, []) for a DICOM file that cannot be used (the header, when it was read,
    still tells which series lost a file). ``remarks`` receives pydicom's warnings about its elements."""
    remarks = [] if remarks is None else remarks
    try:
        if not _looks_like_dicom(path):
            return None, None, []
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:  # old exports write files without the 128-byte preamble
            ds = dcmread(path, stop_before_pixels=True, force=True)
        damaged = _drop_damaged(ds, remarks)
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            damaged += _drop_damaged(meta, remarks)
    except UNREADABLE as error:
        return None, f"unreadable ({describe(error)[:160]})", []
    needed = [f"{name} ({why})" for name, why in damaged if name.split(">")[-1] in NEEDED]
    if needed:
        return ds, f"damaged element(s) {', '.join(needed)}", []
    return ds, None, [f"{name} ({why})" for name, why in damaged]


def _files(root: Path, warn: Warn) -> list[Path]:
    """Every regular file under ``root`` (hidden ones aside), sorted; a folder or file that cannot be read, and
    a link to a folder (not followed: it could lead anywhere, or in a loop), is one warning line."""
    found: list[Path] = []

    def unreadable(error: OSError) -> None:
        warn(f"{shown(error.filename or root)}: folder cannot be read ({error.strerror}); skipped")

    for folder, folders, names in os.walk(root, onerror=unreadable, followlinks=False):
        for name in sorted(folders):
            if os.path.islink(os.path.join(folder, name)) and not name.startswith("."):
                warn(f"{shown(os.path.join(folder, name))}: a link to a folder, not followed; skipped")
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in names:
            path = Path(folder) / name
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            try:
                regular = path.is_file()  # follows a link to a file
            except OSError as error:
                warn(f"{shown(path)}: cannot be read ({error.strerror}); skipped")
                continue
            if regular:
                found.append(path)
            elif not path.is_dir():
                warn(f"{shown(path)}: not a regular file (a broken link, a pipe or a device); skipped")
    return sorted(found)


def _add_image(studies: dict[str, Study], path: Path, ds: Dataset, sop_class: str) -> None:
    study_uid, series_uid = str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", ""))
    study = studies.setdefault(study_uid, Study(
        uid=study_uid, patient_id=str(ds.get("PatientID", "") or ""), date=str(ds.get("StudyDate", "") or ""),
        description=str(ds.get("StudyDescription", "") or "")))
    series = study.series.setdefault(series_uid, Series(
        uid=series_uid, modality=str(ds.get("Modality", "")).upper(), sop_class=sop_class,
        description=str(ds.get("SeriesDescription", "") or ""),
        frame_of_reference=str(ds.get("FrameOfReferenceUID", "") or "")))
    series.files.append(path)
    series.headers.append(ds)
    patient = str(ds.get("PatientID", "") or "")
    if patient != study.patient_id and not study.conflicts:  # the output folder is named after it
        study.conflicts.append(f"{study.label()}: PatientID differs between its files ({study.patient_id!r}, "
                               f"{patient!r} in {shown(path)})")


def _uids(ds: Dataset | None) -> tuple[str, str]:
    if ds is None:
        return "", ""
    try:
        return str(ds.get("StudyInstanceUID", "") or ""), str(ds.get("SeriesInstanceUID", "") or "")
    except UNREADABLE:
        return "", ""


def _attribute(studies: dict[str, Study], skipped: list[tuple[Path, str, Dataset | None]], warn: Warn) -> None:
    """Each file that could not be used, one warning line; the series it belonged to (by its UIDs, else every
    series with files in its folder) learns of it: a known member makes the series incomplete."""
    for path, reason, ds in skipped:
        message = f"{shown(path)}: {reason}; skipped"
        warn(message)
        study_uid, series_uid = _uids(ds)
        if study_uid in studies and series_uid in studies[study_uid].series:
            studies[study_uid].series[series_uid].damaged.append(message)
            studies[study_uid].warnings.append(message)
            continue
        for study in studies.values():
            near = [s for s in study.series.values() if any(f.parent == path.parent for f in s.files)]
            for series in near:  # it may have been one of their images: said with whatever they give
                series.notes.append(message)
            if near:
                study.warnings.append(message)


def _image_like(ds: Dataset, sop_class: str) -> bool:
    """Whether a DICOM file claims to be an image (so that one without UIDs or Rows is damaged, not a report):
    an image SOP class in its header or its meta information, or any element of the image modules."""
    meta = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
    return bool({sop_class, meta} & (PET_STORAGE | CT_STORAGE)) or any(
        keyword in ds for keyword in ("Rows", "ImagePositionPatient", "PixelSpacing", "ImageType"))


def _unidentified(ds: Dataset, sop_class: str) -> str | None:
    """Why a DICOM file that names neither its SOP class nor its instance is damaged, or None. Every object
    names them (reports, presentation states and DICOMDIRs too, which are skipped quietly); a damaged length
    or VR in the file meta group makes pydicom read the rest of the file into one meta element, leaving a
    dataset without them, and skipped quietly it would drop a slice from its series unsaid (bench/fuzz_dicom.py)."""
    if sop_class or ds.get("SOPInstanceUID"):
        return None
    return "a DICOM file without SOPClassUID or SOPInstanceUID (its header is damaged)"


def _read_whole(path: Path) -> Dataset:
    return dcmread(path, force=True)  # the scan found it to be DICOM, with or without a preamble


def _compare_copies(studies: dict[str, Study], kept: dict[str, tuple[Path, Dataset]],
                    copies: dict[str, list[tuple[Path, Dataset]]]) -> None:
    """Each file that repeats an image (its SOPInstanceUID) is compared with the file kept: identical copies
    are one note per series; copies that differ in pixels or in what the geometry or the SUV reads make the
    series ambiguous (``Series.ambiguous``: refused when it is read)."""
    keywords = compared_keywords(NEEDED)
    identical: dict[int, list[tuple[Path, Path]]] = {}
    for instance, others in copies.items():
        path, ds = kept[instance]
        study_uid, series_uid = _uids(ds)
        series = studies[study_uid].series[series_uid]
        for copy, copy_ds in others:
            found = copy_differences((path, ds), (copy, copy_ds), keywords, _read_whole)
            if found:
                series.ambiguous.append(ambiguity(path, copy, instance, found))
            else:
                identical.setdefault(id(series), []).append((copy, path))
    for study in studies.values():
        for series in study.series.values():
            if pairs := identical.get(id(series)):
                series.notes.append(f"{series.where}: {len(pairs)} file(s) are identical copies of its images (one "
                                    f"SOPInstanceUID) and were not used, e.g. {shown(pairs[0][0])} (a copy of "
                                    f"{shown(pairs[0][1])})")


def scan_folder(root: Path, warn: Warn = print_warning) -> list[Study]:
    """Every study of a folder (any nesting, any file names), with its image series; DICOMDIR and the usual
    companions of images (NOT_IMAGES) are skipped quietly, every other file or folder that cannot be used
    with one ``warn`` line. Studies are sorted by patient and date, series by UID."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{shown(root)}: DICOM folder missing")
    studies: dict[str, Study] = {}
    kept: dict[str, tuple[Path, Dataset]] = {}  # SOPInstanceUID: the first file of each image
    copies: dict[str, list[tuple[Path, Dataset]]] = {}  # SOPInstanceUID: the other files of that image
    skipped: list[tuple[Path, str, Dataset | None]] = []
    remarks: dict[tuple[str, str], list[Path]] = {}  # (series UID, pydicom's remark) -> the files it is about
    for path in _files(root, warn):
        found: list[str] = []
        ds, problem, dropped = _read_header(path, found)
        for remark in found:
            remarks.setdefault((_uids(ds)[1], remark), []).append(path)
        if problem is not None:
            skipped.append((path, problem, ds))
            continue
        if ds is None:
            if path.suffix.lower() not in NOT_IMAGES and not is_image_name(path.name):
                warn(f"{shown(path)}: not a DICOM file; skipped")
            continue
        sop_class = str(ds.get("SOPClassUID", "") or getattr(ds.get("file_meta"), "MediaStorageSOPClassUID", ""))
        instance = str(ds.get("SOPInstanceUID", ""))
        lacking = [k for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Rows") if not ds.get(k)]
        if lacking and _image_like(ds, sop_class):  # an image without them: truncated or damaged
            skipped.append((path, f"an image without {', '.join(lacking)} (truncated or damaged?)", ds))
            continue
        if (why := _unidentified(ds, sop_class)) is not None:
            skipped.append((path, why, ds))
            continue
        if sop_class == DIRECTORY_STORAGE or lacking:
            continue  # not an image (a directory, a report, a presentation state)
        if instance in kept:
            copies.setdefault(instance, []).append((path, ds))  # the same image exported twice: compared below
            continue
        kept[instance] = (path, ds)
        if dropped:
            warn(f"{shown(path)}: damaged element(s) {', '.join(dropped)} ignored (not used here)")
        _add_image(studies, path, ds, sop_class)
    for line in _remark_lines(remarks):
        warn(line)
    _attribute(studies, skipped, warn)
    _compare_copies(studies, kept, copies)
    return _numbered(sorted(studies.values(), key=lambda s: (s.patient_id, s.date, s.uid)))


def _series_order(series: Series) -> tuple:
    """PET first, then CT, then the rest; each by SeriesNumber (as the scanner's console lists them), then UID."""
    try:
        number = int(str(series.first.get("SeriesNumber", "") or "").strip() or 0)
    except ValueError:
        number = 0
    return ({"PT": 0, "CT": 1}.get(series.modality, 2), series.modality, number, series.uid)


def _numbered(studies: list[Study]) -> list[Study]:
    """Number every series of the folder 1, 2, ... (studies in their order, series by _series_order): a choice
    may name a series by its number in the listing that asks for it."""
    number = 0
    for study in studies:
        ordered = sorted(study.series.values(), key=_series_order)
        study.series = {series.uid: series for series in ordered}
        for series in ordered:
            number += 1
            series.number = number
    return studies
