"""DICOM PET/CT in: find the studies of a folder, choose each study's PET and CT series, read a series into
one volume (or refuse it in one line), and the converter ``python -m model.dicom DICOM_DIR OUT_DIR``.

A series is read only when it is one regular volume: slices ordered along the normal of
ImageOrientationPatient, rescaled slice by slice (GE PET has a slope per slice); localizers (another plane)
and repeated images of one position are dropped, each with a note. The slightly uneven gaps between the beds
of a multi-bed series are accepted while every slice lies within EVEN_TOLERANCE of a slice spacing of its
place on the regular grid written; a missing slice, uneven gaps beyond that, slices that are not parallel,
gantry tilt, multi-frame objects, dynamic or gated PET, a rescale slope that is not a positive number and
pixel data that cannot be decoded are refused, since each would give a wrong volume.

Exports are taken as they come: a file or folder that cannot be read is skipped with one warning line (and
the series it belonged to, when known, is refused as incomplete); a header value that does not parse is its
study's one-line error, never a traceback, and one study's failure leaves the others to run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import struct
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from model.errors import InputError, WriteError, describe, one_line, shown
from model.files import atomic_write_bytes
from model.geometry import CT_FILL_HU, resample_onto
from model.readers import is_image_name, write_image_atomic
from model.suv import SUV_METHODS, SuvConversion, SuvMethod, suv_conversion, values_of

PET_STORAGE = {"1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.5.1.4.1.1.130", "1.2.840.10008.5.1.4.1.1.128.1"}
CT_STORAGE = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"}
DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"  # DICOMDIR
# A gap over this multiple of the usual one is a missing slice; under its inverse, slices overlap.
GAP_TOLERANCE = 1.5
# Slice origins may stray this far (in pixels) from the line along the slice normal: a quarter pixel is
# float rounding of ImagePositionPatient; more is a tilted gantry (a sheared volume).
MAX_SHEAR_PIXELS = 0.25
# The slices of a volume must lie within this fraction of the slice spacing of their place on the regular
# grid that is written (first slice to last, evenly): a tenth of a voxel is below what PET (5 to 7 mm FWHM)
# or the position's own rounding resolves, and admits real multi-bed series (a Discovery ST: 261 gaps of
# 3.27 mm, four of 3.29, one of 3.19, at most 0.08 mm = 2.4 % of a slice off the grid), while 8 gaps of 24 mm
# then 7 of 35 mm (a slice 41 mm, 1.4 slices, off) are refused instead of written 77 mm out of place.
EVEN_TOLERANCE = 0.1
# Direction cosines of one stack agree to this (written with 6 or more decimals; 1e-4 rad is 0.035 mm at the
# edge of a 700 mm field of view); images whose normal is over 45 degrees away are another plane (localizers).
ORIENTATION_TOLERANCE = 1e-4
OTHER_PLANE_COS = math.cos(math.radians(45))
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

    @property
    def first(self) -> Dataset:
        return self.headers[0]

    @property
    def is_localizer(self) -> bool:
        return all("LOCALIZER" in _upper_values(ds.get("ImageType")) for ds in self.headers)

    @property
    def corrected_image(self) -> tuple[str, ...]:
        return _upper_values(self.first.get("CorrectedImage"))

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

    def dynamic_or_gated(self) -> str | None:
        """Why this PET series is not one static volume, or None; InputError when its images disagree.

        From every header: SeriesType DYNAMIC or GATED, or several images at one position told apart by a time
        (FrameReferenceTime, TriggerTime, TemporalPositionIndex). Never from NumberOfTimeSlices and the like:
        GE writes NumberOfTimeSlices per bed in a static multi-bed series (1 to 6 across one series).
        """
        kinds = Counter(_upper_values(ds.get("SeriesType"))[:1] for ds in self.headers)
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
            if "LOCALIZER" in _upper_values(ds.get("ImageType")):
                continue
            position = tuple(np.round(_numbers(ds, "ImagePositionPatient", 3, path, self.uid), 2))
            by_position.setdefault(position, set()).add(tuple(_upper_values(ds.get(k)) for k in TEMPORAL))
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


@dataclass
class SeriesVolume:
    """A series read into one volume, with its headers in slice order (what a DICOM SEG references)."""

    image: sitk.Image
    headers: list[Dataset]
    series: Series
    notes: list[str] = field(default_factory=list)  # files dropped or suspected, one line each


@dataclass
class DicomCase:
    """One study ready for the network: PET in SUV on its own grid, CT on its own grid."""

    study: Study
    pet: SeriesVolume
    ct: SeriesVolume
    suv: SuvConversion


def _upper_values(value: object) -> tuple[str, ...]:
    return values_of(value)  # one way of reading multi-valued strings, shared with model.suv


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


def _dcmread(path: Path, **options) -> Dataset:
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


def _drop_damaged(ds: Dataset) -> list[tuple[str, str]]:
    """Convert every element now (pydicom converts lazily, and a damaged one would raise wherever it is first
    read); damaged ones are removed. Returns (keyword, why) of each, nested ones as ``Sequence>Keyword``."""
    damaged = []
    for tag in list(ds.keys()):
        name = keyword_for_tag(tag) or str(tag)
        try:
            element = ds[tag]
            items = list(element.value) if element.VR == "SQ" else []
            str(element.value)  # multi-values and numbers are converted here
        except UNREADABLE as error:
            damaged.append((name, describe(error)[:80]))
            del ds[tag]
            continue
        damaged += [(f"{name}>{inner}", why) for item in items for inner, why in _drop_damaged(item)]
    return damaged


def _read_header(path: Path) -> tuple[Dataset | None, str | None, list[str]]:
    """(header, None, damaged elements dropped) of a DICOM file; (None, None, []) for a file that is not DICOM;
    (header or None, why it is unusable, []) for a DICOM file that cannot be used (the header, when it was read,
    still tells which series lost a file)."""
    try:
        if not _looks_like_dicom(path):
            return None, None, []
        try:
            ds = _dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:  # old exports write files without the 128-byte preamble
            ds = _dcmread(path, stop_before_pixels=True, force=True)
        damaged = _drop_damaged(ds)
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            damaged += _drop_damaged(meta)
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


def scan_folder(root: Path, warn: Warn = print_warning) -> list[Study]:
    """Every study of a folder (any nesting, any file names), with its image series; DICOMDIR and the usual
    companions of images (NOT_IMAGES) are skipped quietly, every other file or folder that cannot be used
    with one ``warn`` line. Studies are sorted by patient and date, series by UID."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{shown(root)}: DICOM folder missing")
    studies: dict[str, Study] = {}
    seen_instances: set[str] = set()
    skipped: list[tuple[Path, str, Dataset | None]] = []
    for path in _files(root, warn):
        ds, problem, dropped = _read_header(path)
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
        if instance in seen_instances:
            continue  # the same image exported twice
        seen_instances.add(instance)
        if dropped:
            warn(f"{shown(path)}: damaged element(s) {', '.join(dropped)} ignored (not used here)")
        _add_image(studies, path, ds, sop_class)
    _attribute(studies, skipped, warn)
    return sorted(studies.values(), key=lambda s: (s.patient_id, s.date, s.uid))


def _listing(series: Sequence[Series]) -> str:
    return "; ".join(s.label() for s in series)


def choose_series(study: Study, pet_series: str | None = None, ct_series: str | None = None) -> tuple[Series, Series]:
    """The study's PET series (attenuation corrected, static) and its CT (same frame of reference, else the
    largest). A UID given that belongs to this study chooses; one that does not is ignored here."""
    if study.conflicts:
        raise InputError(study.conflicts[0])
    all_series = list(study.series.values())
    if pet_series in study.series:
        pet = study.series[pet_series]
        if pet.modality != "PT":
            raise InputError(f"{study.label()}: --pet-series {pet_series} is a {pet.modality} series, not PET")
    else:
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
        if len(static) > 1:
            raise InputError(f"{study.label()}: {len(static)} PET series could be the one: {_listing(static)}; "
                             "choose with --pet-series UID")
        pet = static[0]
    if ct_series in study.series:
        ct = study.series[ct_series]
        if ct.modality != "CT":
            raise InputError(f"{study.label()}: --ct-series {ct_series} is a {ct.modality} series, not CT")
        return pet, ct
    cts = [s for s in all_series if s.modality == "CT" and s.sop_class in CT_STORAGE and not s.is_localizer]
    if not cts:
        raise InputError(f"{study.label()}: no CT series; series: {_listing(all_series)}")
    matching = [s for s in cts if s.frame_of_reference and s.frame_of_reference == pet.frame_of_reference]
    if len(matching) == 1:
        return pet, matching[0]
    if len(matching) > 1:
        raise InputError(f"{study.label()}: {len(matching)} CT series share the PET's frame of reference: "
                         f"{_listing(matching)}; choose with --ct-series UID")
    largest = max(len(s.files) for s in cts)
    biggest = [s for s in cts if len(s.files) == largest]
    if len(biggest) > 1:
        raise InputError(f"{study.label()}: no CT shares the PET's frame of reference and {len(biggest)} are "
                         f"the largest: {_listing(biggest)}; choose with --ct-series UID")
    return pet, biggest[0]


def _numbers(ds: Dataset, keyword: str, count: int, path: Path, series_uid: str) -> np.ndarray:
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


def _integer(ds: Dataset, keyword: str, default: int, path: Path, series_uid: str) -> int:
    if ds.get(keyword) in (None, ""):
        return default
    number = float(_numbers(ds, keyword, 1, path, series_uid)[0])
    if not number.is_integer():
        raise InputError(f"{shown(path)}: series {series_uid}: {keyword} {number:g} is not an integer")
    return int(number)


def _stack(series: Series) -> tuple[list[int], np.ndarray, np.ndarray, list[str]]:
    """The images of one stack (indices into series.files), its row and column cosines, and notes. Images of
    another plane (over 45 degrees off: localizers) are dropped with a note; images at a small angle to the
    others are refused, since no regular volume holds them."""
    where = series.where
    images = [i for i, ds in enumerate(series.headers) if "LOCALIZER" not in _upper_values(ds.get("ImageType"))]
    notes = [] if len(images) == len(series.files) else [
        f"{where}: {len(series.files) - len(images)} localizer image(s) (ImageType LOCALIZER) not used"]
    if not images:
        raise InputError(f"{where}: no image slices (only localizers)")
    cosines = {i: _numbers(series.headers[i], "ImageOrientationPatient", 6, series.files[i], series.uid)
               for i in images}
    common, _ = Counter(tuple(c) for c in cosines.values()).most_common(1)[0]
    main = np.array(common)
    normal = np.cross(main[:3], main[3:])
    same = [i for i in images if np.max(np.abs(cosines[i] - main)) <= ORIENTATION_TOLERANCE]
    other_plane = [i for i in images if i not in same and abs(np.cross(cosines[i][:3], cosines[i][3:]) @ normal)
                   < OTHER_PLANE_COS]
    tilted = [i for i in images if i not in same and i not in other_plane]
    if tilted:
        i = tilted[0]
        raise InputError(f"{where}: {len(tilted)} of {len(images)} images have another ImageOrientationPatient "
                         f"(e.g. {shown(series.files[i].name)}: {[float(f'{v:.6g}') for v in cosines[i]]}, the others "
                         f"{[float(f'{v:.6g}') for v in main]}): slices that are not parallel are not one volume")
    if other_plane:
        notes.append(f"{where}: {len(other_plane)} image(s) in another plane (localizers?) not used, e.g. "
                     f"{shown(series.files[other_plane[0]].name)}")
    row, col = main[:3], main[3:]
    if not (np.isclose(np.linalg.norm(row), 1, atol=1e-3) and np.isclose(np.linalg.norm(col), 1, atol=1e-3)
            and abs(row @ col) < 1e-3):
        raise InputError(f"{where}: ImageOrientationPatient {list(main)} is not two unit vectors at right angles")
    # Written with a few decimals: make them exactly orthonormal for the image's direction matrix.
    row = row / np.linalg.norm(row)
    col = col - (col @ row) * row
    return same, row, col / np.linalg.norm(col), notes


def _one_per_position(series: Series, kept: list[int], normal: np.ndarray,
                      positions: dict[int, np.ndarray]) -> tuple[list[int], np.ndarray, list[str]]:
    """The images in order along the normal, one per position: repeats of a position (the same slice stored
    twice) are dropped with a note, the lowest InstanceNumber kept; a series imaged several times over is
    refused."""
    instance = {i: _integer(series.headers[i], "InstanceNumber", 0, series.files[i], series.uid) for i in kept}
    kept = sorted(kept, key=lambda i: (float(positions[i] @ normal), instance[i]))
    distances = np.array([positions[i] @ normal for i in kept])
    unique = [0] + [k for k in range(1, len(kept)) if distances[k] - distances[k - 1] > 1e-3]
    if len(kept) >= 2 * len(unique) and len(kept) > 1:
        raise InputError(f"{series.where}: {len(kept)} images at {len(unique)} positions: several volumes in one "
                         "series (dynamic, gated or repeated acquisitions) are not supported")
    dropped = sorted(set(kept) - {kept[k] for k in unique})
    notes = [f"{series.where}: {len(dropped)} image(s) repeat the position of another and were not used (the "
             f"lowest InstanceNumber kept), e.g. {shown(series.files[dropped[0]].name)}"] if dropped else []
    if len(unique) < 2:
        raise InputError(f"{series.where}: {len(unique)} slice: not a volume")
    return [kept[k] for k in unique], distances[unique], notes


def _even_spacing(where: str, distances: np.ndarray) -> float:
    """The slice spacing of the regular grid from the first slice to the last; InputError for a missing slice
    or slices further than EVEN_TOLERANCE of a spacing from their place on that grid."""
    gaps = np.diff(distances)
    usual = float(np.median(gaps))
    for k, gap in enumerate(gaps):
        if gap > GAP_TOLERANCE * usual or gap < usual / GAP_TOLERANCE:
            what = "a missing slice?" if gap > usual else "overlapping slices"
            raise InputError(f"{where}: gap of {gap:.2f} mm between slices at {distances[k]:.2f} and "
                             f"{distances[k + 1]:.2f} mm along the normal, usually {usual:.2f} mm ({what})")
    spacing = float(distances[-1] - distances[0]) / (len(distances) - 1)
    offsets = distances - (distances[0] + spacing * np.arange(len(distances)))
    worst = int(np.argmax(np.abs(offsets)))
    if abs(offsets[worst]) > EVEN_TOLERANCE * spacing:
        raise InputError(f"{where}: uneven slice gaps ({gaps.min():.2f} to {gaps.max():.2f} mm): on a regular grid of "
                         f"{spacing:.3f} mm the slice at {distances[worst]:.2f} mm would sit {offsets[worst]:+.2f} mm "
                         f"from its place (more than {EVEN_TOLERANCE:.0%} of a slice); resample the series first")
    return spacing


def _slice_headers(series: Series) -> tuple[list[int], np.ndarray, np.ndarray, float, list[str]]:
    """Indices (into series.files) of the volume's slices in order along the normal, that normal, the
    row/column direction cosines, the slice spacing and notes on images not used; anything irregular is
    refused."""
    where = series.where
    frames = max(_integer(ds, "NumberOfFrames", 1, path, series.uid) for path, ds in zip(
        series.files, series.headers, strict=True))
    if frames > 1:
        raise InputError(f"{where}: multi-frame (enhanced) images with {frames} frames per file are not "
                         "supported; export the series as one file per slice")
    kept, row, col, notes = _stack(series)
    normal = np.cross(row, col)
    positions = {i: _numbers(series.headers[i], "ImagePositionPatient", 3, series.files[i], series.uid)
                 for i in kept}
    kept, distances, repeats = _one_per_position(series, kept, normal, positions)
    spacing = _even_spacing(where, distances)
    origin = positions[kept[0]]
    lateral = max(float(np.linalg.norm((positions[i] - origin) - ((positions[i] - origin) @ normal) * normal))
                  for i in kept)
    pixel = min(_numbers(series.headers[kept[0]], "PixelSpacing", 2, series.files[kept[0]], series.uid))
    if lateral > MAX_SHEAR_PIXELS * pixel:
        tilt = series.headers[kept[0]].get("GantryDetectorTilt")
        raise InputError(f"{where}: slices are shifted {lateral:.2f} mm sideways along the stack (gantry tilt"
                         f"{f' {tilt}'.rstrip() + ' deg' if tilt not in (None, '') else ''}): a sheared volume is "
                         "not supported")
    return kept, normal, np.stack([row, col]), spacing, notes + repeats


def _check_decodable(ds: Dataset, path: Path, series: Series) -> None:
    if "TransferSyntaxUID" not in ds.file_meta:
        # A file without meta information (old exports): its pixels are native, in the encoding it was read in.
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                          ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    syntax = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise InputError(f"{shown(path)}: series {series.uid}: transfer syntax {syntax} ({syntax.name}) cannot "
                         "be decoded") from None
    if not decoder.is_available:
        raise InputError(f"{shown(path)}: series {series.uid}: transfer syntax {syntax.name} cannot be decoded "
                         f"here (needs {' or '.join(decoder.missing_dependencies)})")


def _rescale(ds: Dataset, path: Path, series_uid: str) -> tuple[float, float]:
    """(slope, intercept) of one slice: absent is (1, 0); a slope that is zero, negative or not finite is
    refused (taken as 1 it would silently rescale the slice)."""
    slope = float(_numbers(ds, "RescaleSlope", 1, path, series_uid)[0]) if ds.get("RescaleSlope") not in (
        None, "") else 1.0
    intercept = float(_numbers(ds, "RescaleIntercept", 1, path, series_uid)[0]) if ds.get("RescaleIntercept") not in (
        None, "") else 0.0
    if not (math.isfinite(slope) and slope > 0):
        raise InputError(f"{shown(path)}: series {series_uid}: RescaleSlope {slope:g} is not a positive number")
    if not math.isfinite(intercept):
        raise InputError(f"{shown(path)}: series {series_uid}: RescaleIntercept {intercept:g} is not a number")
    return slope, intercept


def _check_matrix(series: Series, order: list[int]) -> tuple[int, int, np.ndarray]:
    """(rows, columns, PixelSpacing) shared by every slice; InputError otherwise."""
    first, path = series.headers[order[0]], series.files[order[0]]
    rows, columns = (_integer(first, key, 0, path, series.uid) for key in ("Rows", "Columns"))
    spacing = _numbers(first, "PixelSpacing", 2, path, series.uid)
    if rows < 1 or columns < 1 or not np.all(spacing > 0):
        raise InputError(f"{shown(path)}: series {series.uid}: {rows} x {columns} pixels of {list(spacing)} mm: not "
                         "an image (PixelSpacing must be positive)")
    for i in order:
        ds, path = series.headers[i], series.files[i]
        if (_integer(ds, "Rows", 0, path, series.uid), _integer(ds, "Columns", 0, path, series.uid)) != (
                rows, columns) or not np.allclose(_numbers(ds, "PixelSpacing", 2, path, series.uid), spacing,
                                                  atol=1e-4):
            raise InputError(f"{shown(path)}: series {series.uid}: matrix or pixel spacing differs from the series' "
                             "first slice")
        if _integer(ds, "SamplesPerPixel", 1, path, series.uid) != 1:
            raise InputError(f"{shown(path)}: series {series.uid}: colour image, not a scan")
    return rows, columns, spacing


def _check_complete(series: Series) -> None:
    """A series that lost a file is refused: its volume would lack a slice, perhaps at an end, unnoticed."""
    if series.damaged:
        raise InputError(f"{series.where}: {len(series.damaged)} of its files could not be read (first: "
                         f"{series.damaged[0]}): the series is incomplete")


def _check_slice_count(series: Series, slices: int) -> None:
    if series.modality == "PT":
        # NumberOfSlices (0054,0081): the slices of the volume (type 1 in PET images); fewer found: files missing.
        counts = {_integer(ds, "NumberOfSlices", 0, path, series.uid) for path, ds in zip(
            series.files, series.headers, strict=True)}
        if len(counts) == 1 and (count := counts.pop()) > 0 and count != slices:
            raise InputError(f"{series.where}: {slices} slices found, NumberOfSlices says {count}: files are "
                             "missing or belong to another series")


def _pixels(series: Series, i: int, shape: tuple[int, int]) -> np.ndarray:
    path = series.files[i]
    try:
        ds = _dcmread(path, force=True)  # the scan found it to be DICOM, with or without a preamble
        _check_decodable(ds, path, series)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            pixels = ds.pixel_array
    except InputError:
        raise
    except (*UNREADABLE, RuntimeError, MemoryError) as error:
        raise InputError(f"{shown(path)}: series {series.uid}: pixel data cannot be read or decoded "
                         f"({describe(error)[:160]})") from None
    if pixels.shape != shape:
        raise InputError(f"{shown(path)}: series {series.uid}: pixel data of shape {pixels.shape}, expected {shape}")
    return pixels


def read_series(series: Series) -> SeriesVolume:
    """The series as one volume of rescaled values (float32; int16 when every rescale is integral, as in CT),
    on its own grid: spacing (column spacing, row spacing, slice spacing), origin at the first slice, direction
    (rows, columns, normal). Images not used (localizers, repeats) and suspect files are in ``notes``."""
    if series.modality == "PT":
        reason = series.dynamic_or_gated()
        if reason:
            raise InputError(f"{series.where}: {reason} is not supported; choose a static series")
    _check_complete(series)
    order, normal, (row, col), slice_spacing, notes = _slice_headers(series)
    _check_slice_count(series, len(order))
    rows, columns, spacing = _check_matrix(series, order)
    rescale = [_rescale(series.headers[i], series.files[i], series.uid) for i in order]
    integral = all(s == 1.0 and float(b).is_integer() for s, b in rescale)
    volume = np.empty((len(order), rows, columns), dtype=np.float32)
    for k, i in enumerate(order):
        slope, intercept = rescale[k]
        volume[k] = _pixels(series, i, (rows, columns)).astype(np.float32) * np.float32(slope) + np.float32(intercept)
    if integral and volume.min() >= -32768 and volume.max() <= 32767:
        volume = volume.astype(np.int16)
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((float(spacing[1]), float(spacing[0]), slice_spacing))
    first = order[0]
    image.SetOrigin(tuple(float(v) for v in _numbers(series.headers[first], "ImagePositionPatient", 3,
                                                    series.files[first], series.uid)))
    image.SetDirection(tuple(float(v) for v in np.stack([row, col, normal], axis=1).ravel()))
    return SeriesVolume(image=image, headers=[series.headers[i] for i in order], series=series,
                        notes=series.notes + notes)


def _in_file_order(series: Series) -> list[Dataset]:
    return [ds for _, ds in sorted(zip(series.files, series.headers, strict=True), key=lambda pair: pair[0])]


def read_pet_suv(series: Series, method: SuvMethod = "qiba", weight_kg: float | None = None) -> tuple[
        SeriesVolume, SuvConversion]:
    """The PET series in SUVbw (float32) and the conversion used; the factor is checked before the pixels
    are read, so a series without SUV is refused at once."""
    conversion = suv_conversion(_in_file_order(series), method=method, weight_kg=weight_kg,
                                source=f"{shown(series.folder)}: series {series.uid}")
    volume = read_series(series)
    suv = sitk.Cast(volume.image, sitk.sitkFloat32) * conversion.factor
    suv.CopyInformation(volume.image)
    return SeriesVolume(image=suv, headers=volume.headers, series=series, notes=volume.notes), conversion


def load_case(study: Study, pet_series: str | None = None, ct_series: str | None = None,
              suv_method: SuvMethod = "qiba", weight_kg: float | None = None) -> DicomCase:
    """Choose, check and read one study: PET in SUV and CT in HU, each on its own grid."""
    pet_choice, ct_choice = choose_series(study, pet_series, ct_series)
    pet, conversion = read_pet_suv(pet_choice, suv_method, weight_kg)
    ct = read_series(ct_choice)
    return DicomCase(study=study, pet=pet, ct=ct, suv=conversion)


def series_in_folder(folder: Path, modality: str) -> Series:
    """The one series of ``modality`` (PT or CT) in a folder: what ``process.py --pet DIR --ct DIR`` reads."""
    found = [s for study in scan_folder(folder) for s in study.series.values()
             if s.modality == modality and not s.is_localizer]
    if not found:
        raise InputError(f"{shown(folder)}: no {modality} DICOM series in this folder")
    if len(found) > 1:
        raise InputError(f"{shown(folder)}: {len(found)} {modality} series, expected one: {_listing(found)}")
    return found[0]


def check_series_choice(studies: Sequence[Study], pet_series: str | None, ct_series: str | None) -> None:
    """A series UID given must exist in one of the studies (else it would silently choose nothing)."""
    for option, uid in (("--pet-series", pet_series), ("--ct-series", ct_series)):
        if uid is not None and not any(uid in study.series for study in studies):
            raise InputError(f"{option} {uid}: no such series in the DICOM folder")


def study_folders(studies: Sequence[Study]) -> list[str]:
    """``<patient>/<study UID>`` per study, made unique (``_2``, ``_3``..., compared without case, as macOS and
    Windows file systems do): UIDs that differ only in what a file name cannot hold (a trailing '.') must not
    write into one folder."""
    taken: set[str] = set()
    names = []
    for study in studies:
        name, n = study.folder_name, 1
        while name.casefold() in taken:
            n += 1
            name = f"{study.folder_name}_{n}"
        taken.add(name.casefold())
        names.append(name)
    return names


def _check_not_another_study(folder: Path, study: Study) -> None:
    """A folder that holds another study's conversion (or images of unknown origin) is not overwritten."""
    record = folder / "suv.json"
    if record.is_file():
        try:
            other = json.loads(record.read_text()).get("study_uid")
        except (OSError, ValueError, AttributeError) as error:
            raise InputError(f"{shown(record)}: cannot be read ({describe(error)}); not overwritten") from None
        if other != study.uid:
            raise InputError(f"{shown(folder)}: holds study {other} from an earlier conversion; {study.label()} is not "
                             "written over it (convert into another folder)")
    elif any((folder / name).exists() for name in ("SUV.nii.gz", "CTres.nii.gz")):
        raise InputError(f"{shown(folder)}: holds SUV/CTres images without suv.json; not overwritten")


def convert_study(case: DicomCase, out_dir: Path, folder_name: str | None = None, notes: Sequence[str] = ()) -> Path:
    """Write ``<out>/<patient>/<study UID>/{SUV,CTres}.nii.gz`` and ``suv.json`` (written last, with ``notes``:
    files skipped or images not used); returns the folder. A failed write leaves none of the three behind; a
    folder holding another study is refused."""
    folder = Path(out_dir) / (folder_name or case.study.folder_name)
    _check_not_another_study(folder, case.study)
    ct_on_pet = resample_onto(case.ct.image, case.pet.image, CT_FILL_HU)
    document = {"study_uid": case.study.uid, "patient_id": case.study.patient_id, "study_date": case.study.date,
                "pet_series": case.pet.series.uid, "pet_description": case.pet.series.description,
                "ct_series": case.ct.series.uid, "ct_description": case.ct.series.description,
                "suv": case.suv.to_dict(), "warnings": list(notes)}
    written: list[Path] = []
    try:
        for image, name in ((case.pet.image, "SUV.nii.gz"), (ct_on_pet, "CTres.nii.gz")):
            written.append(folder / name)
            write_image_atomic(image, folder / name)
        written.append(folder / "suv.json")
        atomic_write_bytes(folder / "suv.json", json.dumps(document, indent=2).encode())
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return folder


def case_notes(case: DicomCase) -> list[str]:
    """Everything a user should know about how the study was read: files skipped, images not used."""
    return list(dict.fromkeys([*case.study.warnings, *case.pet.notes, *case.ct.notes]))


def _convert_one(study: Study, folder_name: str, out_dir: Path, pet_series: str | None, ct_series: str | None,
                 suv_method: SuvMethod, weight_kg: float | None) -> str:
    case = load_case(study, pet_series, ct_series, suv_method, weight_kg)
    notes = case_notes(case)
    for note in notes:
        if note not in study.warnings:  # those were said when the folder was scanned
            print_warning(note)
    folder = convert_study(case, out_dir, folder_name, notes)
    return (f"{folder_name}: PET {case.pet.image.GetSize()} SUV factor {case.suv.factor:.6g} ({case.suv.method}), "
            f"CT {case.ct.image.GetSize()} -> {shown(folder)}")


def convert(dicom_dir: Path, out_dir: Path, pet_series: str | None = None, ct_series: str | None = None,
            suv_method: SuvMethod = "qiba", weight_kg: float | None = None) -> int:
    """Convert every study of ``dicom_dir``; a failed study is one line on stderr and the others go on.
    Returns the number of failed studies."""
    studies = scan_folder(dicom_dir)
    if not studies:
        raise InputError(f"{shown(dicom_dir)}: no DICOM images found")
    check_series_choice(studies, pet_series, ct_series)
    failures = 0
    for study, folder_name in zip(studies, study_folders(studies), strict=True):
        try:
            line = _convert_one(study, folder_name, out_dir, pet_series, ct_series, suv_method, weight_kg)
        except (InputError, WriteError) as error:
            failures += 1
            print(f"error: {error}", file=sys.stderr)
            continue
        except (OSError, ValueError, TypeError, RuntimeError, MemoryError) as error:
            # Not foreseen, still this study's alone: said in one line, the others go on.
            failures += 1
            print(f"error: {study.label()}: conversion failed ({describe(error)})", file=sys.stderr)
            continue
        print(line, flush=True)
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model.dicom",
        description="DICOM PET/CT studies to OUT_DIR/<patient>/<study UID>/{SUV,CTres}.nii.gz and suv.json: the "
                    "autoPET layout that `python -m train prepare --layout tcia` reads once each study folder "
                    "also holds its SEG.nii.gz (0/1 lesion mask).")
    parser.add_argument("dicom_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--pet-series", default=None, help="SeriesInstanceUID of the PET series to use")
    parser.add_argument("--ct-series", default=None, help="SeriesInstanceUID of the CT series to use")
    parser.add_argument("--suv-method", default="qiba", choices=SUV_METHODS,
                        help="qiba (default) or autopet (the training data's conversion)")
    parser.add_argument("--weight-kg", type=float, default=None, help="body weight when PatientWeight is missing")
    args = parser.parse_args(argv)
    try:
        failures = convert(args.dicom_dir, args.out_dir, args.pet_series, args.ct_series, args.suv_method,
                           args.weight_kg)
    except (InputError, WriteError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
