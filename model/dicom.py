"""DICOM PET/CT in: find the studies of a folder, choose each study's PET and CT series, read a series into
one volume (or refuse it in one line), and the converter ``python -m model.dicom DICOM_DIR OUT_DIR``.

A series is read only when it is one regular volume: slices ordered along the normal of
ImageOrientationPatient, rescaled slice by slice (GE PET has a slope per slice), duplicates and localizers
dropped. The slightly uneven gaps between the beds of a multi-bed series are accepted (the spacing is the
median gap); a missing slice, gantry tilt, multi-frame objects, dynamic or gated PET and pixel data that
cannot be decoded are refused, since each would give a wrong volume.
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import sys
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from model.errors import InputError, WriteError, shown
from model.files import atomic_write_bytes
from model.geometry import CT_FILL_HU, resample_onto
from model.readers import write_image_atomic
from model.suv import SUV_METHODS, SuvConversion, SuvMethod, suv_conversion

PET_STORAGE = {"1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.5.1.4.1.1.130", "1.2.840.10008.5.1.4.1.1.128.1"}
CT_STORAGE = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"}
DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"  # DICOMDIR
# A gap over this multiple of the usual one is a missing slice; under its inverse, slices overlap.
GAP_TOLERANCE = 1.5
# Slice origins may stray this far (in pixels) from the line along the slice normal: a quarter pixel is
# float rounding of ImagePositionPatient; more is a tilted gantry (a sheared volume).
MAX_SHEAR_PIXELS = 0.25
ORIENTATION_DECIMALS = 4
# What pydicom raises on a file that is not DICOM after all, or a truncated one.
UNREADABLE = (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError, IndexError,
              struct.error)


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

    def label(self) -> str:
        """How a message names the series: UID, description, slice count."""
        return f"{self.uid} '{self.description}' ({len(self.files)} {self.modality} images)"

    def dynamic_or_gated(self) -> str | None:
        """Why this PET series is not one static volume, or None."""
        series_type = _upper_values(self.first.get("SeriesType"))
        if series_type and series_type[0] in ("DYNAMIC", "GATED"):
            return f"a {series_type[0].lower()} PET series (SeriesType {'/'.join(series_type)})"
        for keyword in ("NumberOfTimeSlices", "NumberOfTimeSlots", "NumberOfRRIntervals"):
            count = self.first.get(keyword)
            if count is not None and int(count) > 1:
                return f"a dynamic or gated PET series ({keyword} {int(count)})"
        return None


@dataclass
class Study:
    uid: str
    patient_id: str
    date: str
    description: str
    series: dict[str, Series] = field(default_factory=dict)

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


@dataclass
class DicomCase:
    """One study ready for the network: PET in SUV on its own grid, CT on its own grid."""

    study: Study
    pet: SeriesVolume
    ct: SeriesVolume
    suv: SuvConversion


def _upper_values(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    values = value if isinstance(value, Iterable) and not isinstance(value, str | bytes) else [value]
    return tuple(str(v).strip().upper() for v in values)


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


def _read_header(path: Path) -> Dataset | None:
    """The header of a DICOM file, or None for anything else (quietly: exports hold other files)."""
    try:
        return _dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        # Old exports write files without the 128-byte preamble; those start with group 0008.
        try:
            with open(path, "rb") as handle:
                if handle.read(2) not in (b"\x08\x00", b"\x02\x00"):
                    return None
            return _dcmread(path, stop_before_pixels=True, force=True)
        except UNREADABLE:
            return None
    except UNREADABLE:
        return None  # truncated or unreadable: its slice will be missing, and the gap check says so


def scan_folder(root: Path) -> list[Study]:
    """Every study of a folder (any nesting, any file names), with its image series; non-DICOM files and
    DICOMDIR are skipped. Studies are sorted by patient and date, series by UID."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{shown(root)}: DICOM folder missing")
    studies: dict[str, Study] = {}
    seen_instances: set[str] = set()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if path.name.upper() == "DICOMDIR":
            continue
        ds = _read_header(path)
        if ds is None:
            continue
        sop_class = str(ds.get("SOPClassUID", "") or getattr(ds.get("file_meta"), "MediaStorageSOPClassUID", ""))
        instance = str(ds.get("SOPInstanceUID", ""))
        study_uid, series_uid = str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", ""))
        if sop_class == DIRECTORY_STORAGE or not (instance and study_uid and series_uid) or "Rows" not in ds:
            continue  # not an image (a directory, a report, a presentation state)
        if instance in seen_instances:
            continue  # the same image exported twice
        seen_instances.add(instance)
        study = studies.setdefault(study_uid, Study(
            uid=study_uid, patient_id=str(ds.get("PatientID", "") or ""), date=str(ds.get("StudyDate", "") or ""),
            description=str(ds.get("StudyDescription", "") or "")))
        series = study.series.setdefault(series_uid, Series(
            uid=series_uid, modality=str(ds.get("Modality", "")).upper(), sop_class=sop_class,
            description=str(ds.get("SeriesDescription", "") or ""),
            frame_of_reference=str(ds.get("FrameOfReferenceUID", "") or "")))
        series.files.append(path)
        series.headers.append(ds)
    return sorted(studies.values(), key=lambda s: (s.patient_id, s.date, s.uid))


def _listing(series: Sequence[Series]) -> str:
    return "; ".join(s.label() for s in series)


def choose_series(study: Study, pet_series: str | None = None, ct_series: str | None = None) -> tuple[Series, Series]:
    """The study's PET series (attenuation corrected, static) and its CT (same frame of reference, else the
    largest). A UID given that belongs to this study chooses; one that does not is ignored here."""
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
        static = [s for s in corrected if s.dynamic_or_gated() is None]
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


def _vector(ds: Dataset, keyword: str, length: int, series: Series) -> np.ndarray:
    value = ds.get(keyword)
    if value is None or len(value) != length:
        raise InputError(f"{shown(series.folder)}: series {series.uid}: {keyword} missing or malformed")
    return np.array([float(v) for v in value], dtype=float)


def _slice_headers(series: Series) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Indices (into series.files) of the volume's slices in order along the normal, that normal and the
    row/column direction cosines. Localizers and duplicates are dropped; anything irregular is refused."""
    where = f"{shown(series.folder)}: series {series.uid}"
    frames = max(int(ds.get("NumberOfFrames", 1) or 1) for ds in series.headers)
    if frames > 1:
        raise InputError(f"{where}: multi-frame (enhanced) images with {frames} frames per file are not "
                         "supported; export the series as one file per slice")
    candidates = [i for i, ds in enumerate(series.headers) if "LOCALIZER" not in _upper_values(ds.get("ImageType"))]
    orientations = {i: tuple(np.round(_vector(series.headers[i], "ImageOrientationPatient", 6, series),
                                      ORIENTATION_DECIMALS)) for i in candidates}
    if not orientations:
        raise InputError(f"{where}: no image slices (only localizers)")
    main_orientation, _ = Counter(orientations.values()).most_common(1)[0]
    kept = [i for i in candidates if orientations[i] == main_orientation]  # other orientations: localizers
    cosines = _vector(series.headers[kept[0]], "ImageOrientationPatient", 6, series)
    row, col = cosines[:3], cosines[3:]
    if not (np.isclose(np.linalg.norm(row), 1, atol=1e-3) and np.isclose(np.linalg.norm(col), 1, atol=1e-3)
            and abs(row @ col) < 1e-3):
        raise InputError(f"{where}: ImageOrientationPatient {list(cosines)} is not two unit vectors at right angles")
    # Written with a few decimals: make them exactly orthonormal for the image's direction matrix.
    row = row / np.linalg.norm(row)
    col = col - (col @ row) * row
    col = col / np.linalg.norm(col)
    normal = np.cross(row, col)
    positions = {i: _vector(series.headers[i], "ImagePositionPatient", 3, series) for i in kept}
    instance = {i: int(series.headers[i].get("InstanceNumber", 0) or 0) for i in kept}
    kept.sort(key=lambda i: (float(positions[i] @ normal), instance[i]))
    distances = np.array([positions[i] @ normal for i in kept])
    unique = [0] + [k for k in range(1, len(kept)) if distances[k] - distances[k - 1] > 1e-3]
    if len(kept) >= 2 * len(unique) and len(kept) > 1:
        raise InputError(f"{where}: {len(kept)} images at {len(unique)} positions: several volumes in one series "
                         "(dynamic, gated or repeated acquisitions) are not supported")
    kept, distances = [kept[k] for k in unique], distances[unique]  # duplicates: the lowest InstanceNumber stays
    if len(kept) < 2:
        raise InputError(f"{where}: {len(kept)} slice: not a volume")
    gaps = np.diff(distances)
    usual = float(np.median(gaps))
    for k, gap in enumerate(gaps):
        if gap > GAP_TOLERANCE * usual or gap < usual / GAP_TOLERANCE:
            what = "a missing slice?" if gap > usual else "overlapping slices"
            raise InputError(f"{where}: gap of {gap:.2f} mm between slices at {distances[k]:.2f} and "
                             f"{distances[k + 1]:.2f} mm along the normal, usually {usual:.2f} mm ({what})")
    origin = positions[kept[0]]
    lateral = max(float(np.linalg.norm((positions[i] - origin) - ((positions[i] - origin) @ normal) * normal))
                  for i in kept)
    pixel = min(_vector(series.headers[kept[0]], "PixelSpacing", 2, series))
    if lateral > MAX_SHEAR_PIXELS * pixel:
        tilt = series.headers[kept[0]].get("GantryDetectorTilt")
        raise InputError(f"{where}: slices are shifted {lateral:.2f} mm sideways along the stack (gantry tilt"
                         f"{f' {float(tilt):g} deg' if tilt is not None else ''}): a sheared volume is not "
                         "supported")
    return kept, normal, np.stack([row, col])


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


def read_series(series: Series) -> SeriesVolume:
    """The series as one volume of rescaled values (float32; int16 when every rescale is integral, as in CT),
    on its own grid: spacing (column spacing, row spacing, median gap), origin at the first slice, direction
    (rows, columns, normal)."""
    where = f"{shown(series.folder)}: series {series.uid}"
    if series.modality == "PT":
        reason = series.dynamic_or_gated()
        if reason:
            raise InputError(f"{where}: {reason} is not supported; choose a static series")
    order, normal, (row, col) = _slice_headers(series)
    first = series.headers[order[0]]
    rows, columns = int(first.Rows), int(first.Columns)
    spacing = _vector(first, "PixelSpacing", 2, series)
    for i in order:
        ds = series.headers[i]
        if (int(ds.Rows), int(ds.Columns)) != (rows, columns) or not np.allclose(
                _vector(ds, "PixelSpacing", 2, series), spacing, atol=1e-4):
            raise InputError(f"{shown(series.files[i])}: series {series.uid}: matrix or pixel spacing differs "
                             "from the series' first slice")
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise InputError(f"{shown(series.files[i])}: series {series.uid}: colour image, not a scan")
    slopes = [float(series.headers[i].get("RescaleSlope", 1) or 1) for i in order]
    intercepts = [float(series.headers[i].get("RescaleIntercept", 0) or 0) for i in order]
    integral = all(s == 1.0 for s in slopes) and all(float(b).is_integer() for b in intercepts)
    volume = np.empty((len(order), rows, columns), dtype=np.float32)
    for k, i in enumerate(order):
        path = series.files[i]
        try:
            ds = _dcmread(path, force=True)  # the scan found it to be DICOM, with or without a preamble
        except (InvalidDicomError, OSError, ValueError, EOFError) as error:
            raise InputError(f"{shown(path)}: series {series.uid}: unreadable ({error})") from None
        _check_decodable(ds, path, series)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                pixels = ds.pixel_array
        except (ValueError, RuntimeError, NotImplementedError, AttributeError, TypeError) as error:
            raise InputError(f"{shown(path)}: series {series.uid}: pixel data cannot be decoded "
                             f"({str(error).splitlines()[0][:160]})") from None
        if pixels.shape != (rows, columns):
            raise InputError(f"{shown(path)}: series {series.uid}: pixel data of shape {pixels.shape}, expected "
                             f"({rows}, {columns})")
        volume[k] = pixels.astype(np.float32) * np.float32(slopes[k]) + np.float32(intercepts[k])
    if integral and volume.min() >= -32768 and volume.max() <= 32767:
        volume = volume.astype(np.int16)
    image = sitk.GetImageFromArray(volume)
    gaps = np.diff([_vector(series.headers[i], "ImagePositionPatient", 3, series) @ normal for i in order])
    image.SetSpacing((float(spacing[1]), float(spacing[0]), float(np.median(gaps))))
    image.SetOrigin(tuple(float(v) for v in _vector(first, "ImagePositionPatient", 3, series)))
    image.SetDirection(tuple(float(v) for v in np.stack([row, col, normal], axis=1).ravel()))
    return SeriesVolume(image=image, headers=[series.headers[i] for i in order], series=series)


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
    return SeriesVolume(image=suv, headers=volume.headers, series=series), conversion


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


def convert_study(case: DicomCase, out_dir: Path) -> Path:
    """Write ``<out>/<patient>/<study UID>/{SUV,CTres}.nii.gz`` and ``suv.json`` (written last); returns the
    folder. A failed write leaves none of the three behind."""
    folder = Path(out_dir) / case.study.folder_name
    ct_on_pet = resample_onto(case.ct.image, case.pet.image, CT_FILL_HU)
    document = {"study_uid": case.study.uid, "patient_id": case.study.patient_id, "study_date": case.study.date,
                "pet_series": case.pet.series.uid, "pet_description": case.pet.series.description,
                "ct_series": case.ct.series.uid, "ct_description": case.ct.series.description,
                "suv": case.suv.to_dict()}
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


def convert(dicom_dir: Path, out_dir: Path, pet_series: str | None = None, ct_series: str | None = None,
            suv_method: SuvMethod = "qiba", weight_kg: float | None = None) -> int:
    """Convert every study of ``dicom_dir``; a failed study is one line on stderr and the others go on.
    Returns the number of failed studies."""
    studies = scan_folder(dicom_dir)
    if not studies:
        raise InputError(f"{shown(dicom_dir)}: no DICOM images found")
    check_series_choice(studies, pet_series, ct_series)
    failures = 0
    for study in studies:
        try:
            case = load_case(study, pet_series, ct_series, suv_method, weight_kg)
            folder = convert_study(case, out_dir)
        except (InputError, WriteError) as error:
            failures += 1
            print(f"error: {error}", file=sys.stderr)
            continue
        print(f"{case.study.folder_name}: PET {case.pet.image.GetSize()} SUV factor {case.suv.factor:.6g} "
              f"({case.suv.method}), CT {case.ct.image.GetSize()} -> {shown(folder)}", flush=True)
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
