"""One DICOM series into one volume (or refused in one line); the PET in SUV; a study's PET and CT read.

A series is read only when it is one regular volume: slices ordered along the normal of
ImageOrientationPatient, rescaled slice by slice (GE PET has a slope per slice); localizers (another plane)
and images that repeat another of one position identically are dropped, each with a note, while a repeat that
differs (pixels or a header the geometry or the SUV reads) makes the series ambiguous and refused. The
slightly uneven gaps between the beds of a multi-bed series are accepted while every slice lies within
EVEN_TOLERANCE of a slice spacing of its place on the regular grid written; a missing slice, uneven gaps
beyond that, slices that are not parallel, gantry tilt, multi-frame objects, dynamic or gated PET, a rescale
slope that is not a positive number and pixel data that cannot be decoded are refused, since each would give a
wrong volume.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from model.errors import InputError, describe, shown
from model.geometry import DIRECTION_TOLERANCE, orthonormality_error
from studies.dicom.choice import choose_series
from studies.dicom.duplicates import compared_keywords, header_differences
from studies.dicom.scan import (
    NEEDED,
    UNREADABLE,
    Series,
    Study,
    dcmread,
    header_numbers,
    upper_values,
)
from studies.suv import DEFAULT_SUV_METHOD, SuvConversion, SuvMethod, suv_conversion

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



def _integer(ds: Dataset, keyword: str, default: int, path: Path, series_uid: str) -> int:
    if ds.get(keyword) in (None, ""):
        return default
    number = float(header_numbers(ds, keyword, 1, path, series_uid)[0])
    if not number.is_integer():
        raise InputError(f"{shown(path)}: series {series_uid}: {keyword} {number:g} is not an integer")
    return int(number)


def _stack(series: Series) -> tuple[list[int], np.ndarray, np.ndarray, list[str]]:
    """The images of one stack (indices into series.files), its row and column cosines, and notes. Images of
    another plane (over 45 degrees off: localizers) are dropped with a note; images at a small angle to the
    others are refused, since no regular volume holds them."""
    where = series.where
    images = [i for i, ds in enumerate(series.headers) if "LOCALIZER" not in upper_values(ds.get("ImageType"))]
    notes = [] if len(images) == len(series.files) else [
        f"{where}: {len(series.files) - len(images)} localizer image(s) (ImageType LOCALIZER) not used"]
    if not images:
        raise InputError(f"{where}: no image slices (only localizers)")
    cosines = {i: header_numbers(series.headers[i], "ImageOrientationPatient", 6, series.files[i], series.uid)
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
    error = orthonormality_error(np.stack([row, col], axis=1))
    if not error <= DIRECTION_TOLERANCE:  # the one rule of every reader's direction (model.geometry)
        raise InputError(f"{where}: ImageOrientationPatient {list(main)} is not two unit vectors at right angles "
                         f"(off by {error:.3g}, more than {DIRECTION_TOLERANCE:g})")
    # Written with a few decimals: make them exactly orthonormal for the image's direction matrix.
    row = row / np.linalg.norm(row)
    col = col - (col @ row) * row
    return same, row, col / np.linalg.norm(col), notes


def _one_per_position(series: Series, kept: list[int], normal: np.ndarray,
                      positions: dict[int, np.ndarray]) -> tuple[list[int], np.ndarray, list[str]]:
    """The images in order along the normal, one per position: a repeat of a position that is the same image
    (pixels and the headers the geometry and the SUV read) is dropped with a note, the lowest InstanceNumber
    kept; a repeat that differs is refused (``_check_repeats``), as is a series imaged several times over."""
    instance = {i: _integer(series.headers[i], "InstanceNumber", 0, series.files[i], series.uid) for i in kept}
    kept = sorted(kept, key=lambda i: (float(positions[i] @ normal), instance[i]))
    distances = np.array([positions[i] @ normal for i in kept])
    unique = [0] + [k for k in range(1, len(kept)) if distances[k] - distances[k - 1] > 1e-3]
    if len(kept) >= 2 * len(unique) and len(kept) > 1:
        raise InputError(f"{series.where}: {len(kept)} images at {len(unique)} positions: several volumes in one "
                         "series (dynamic, gated or repeated acquisitions) are not supported")
    dropped = sorted(set(kept) - {kept[k] for k in unique})
    _check_repeats(series, [kept[a:b] for a, b in zip(unique, [*unique[1:], len(kept)], strict=True)],
                   distances[unique])
    notes = [f"{series.where}: {len(dropped)} image(s) repeat the position of another, the same image (pixels "
             f"and headers), and were not used, e.g. {shown(series.files[dropped[0]].name)}"] if dropped else []
    if len(unique) < 2:
        raise InputError(f"{series.where}: {len(unique)} slice: not a volume")
    return [kept[k] for k in unique], distances[unique], notes


# Two images at one position are one slice when these agree (and their rescaled pixels): what the geometry and
# the SUV read, less what tells two instances apart or may differ with the same values (a position rounded
# otherwise, another rescale of the same values).
REPEAT_KEYWORDS = tuple(k for k in compared_keywords(NEEDED)
                        if k not in ("ImagePositionPatient", "RescaleSlope", "RescaleIntercept"))


def _rescaled(series: Series, i: int) -> np.ndarray:
    ds, path = series.headers[i], series.files[i]
    shape = (_integer(ds, "Rows", 0, path, series.uid), _integer(ds, "Columns", 0, path, series.uid))
    slope, intercept = _rescale(ds, path, series.uid)
    return _pixels(series, i, shape).astype(np.float64) * slope + intercept


def _check_repeats(series: Series, groups: list[list[int]], distances: np.ndarray) -> None:
    """Each group holds the images at one position, the one kept first: a repeat that differs from it in its
    pixels or headers is refused, naming both files (taking either silently changes the volume)."""
    for group, distance in zip(groups, distances, strict=True):
        for other in group[1:]:
            first = group[0]
            found = header_differences(series.headers[first], series.headers[other], REPEAT_KEYWORDS)
            if not found and not np.array_equal(_rescaled(series, first), _rescaled(series, other)):
                found = ["pixel values"]
            if found:
                raise InputError(f"{series.where}: {shown(series.files[first].name)} and "
                                 f"{shown(series.files[other].name)} are two different images at one slice position "
                                 f"({distance:.2f} mm along the normal), differing in {', '.join(found[:3])}: which "
                                 "one is the slice cannot be told")


def _check_one_frame(series: Series) -> None:
    """The slices of one volume share one frame of reference: positions in two frames are not comparable."""
    frames = Counter(str(ds.get("FrameOfReferenceUID", "") or "") for ds in series.headers)
    if len(frames) > 1:
        listing = ", ".join(f"{frame or '(not given)'} in {count} file{'s' * (count > 1)}"
                            for frame, count in frames.most_common())
        raise InputError(f"{series.where}: FrameOfReferenceUID differs between the images of the series ({listing}):"
                         " positions in two frames of reference are not one volume")


def _check_unambiguous(series: Series) -> None:
    """A series holding copies of one image that differ is refused (studies.dicom.duplicates)."""
    if series.ambiguous:
        more = f" ({len(series.ambiguous)} images so)" if len(series.ambiguous) > 1 else ""
        raise InputError(f"{series.where}: ambiguous series{more}: {series.ambiguous[0]}")


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
    positions = {i: header_numbers(series.headers[i], "ImagePositionPatient", 3, series.files[i], series.uid)
                 for i in kept}
    kept, distances, repeats = _one_per_position(series, kept, normal, positions)
    spacing = _even_spacing(where, distances)
    origin = positions[kept[0]]
    lateral = max(float(np.linalg.norm((positions[i] - origin) - ((positions[i] - origin) @ normal) * normal))
                  for i in kept)
    pixel = min(header_numbers(series.headers[kept[0]], "PixelSpacing", 2, series.files[kept[0]], series.uid))
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
    slope = float(header_numbers(ds, "RescaleSlope", 1, path, series_uid)[0]) if ds.get("RescaleSlope") not in (
        None, "") else 1.0
    intercept = float(header_numbers(ds, "RescaleIntercept", 1, path, series_uid)[0]) if ds.get(
        "RescaleIntercept") not in (None, "") else 0.0
    if not (math.isfinite(slope) and slope > 0):
        raise InputError(f"{shown(path)}: series {series_uid}: RescaleSlope {slope:g} is not a positive number")
    if not math.isfinite(intercept):
        raise InputError(f"{shown(path)}: series {series_uid}: RescaleIntercept {intercept:g} is not a number")
    return slope, intercept


def _check_matrix(series: Series, order: list[int]) -> tuple[int, int, np.ndarray]:
    """(rows, columns, PixelSpacing) shared by every slice; InputError otherwise."""
    first, path = series.headers[order[0]], series.files[order[0]]
    rows, columns = (_integer(first, key, 0, path, series.uid) for key in ("Rows", "Columns"))
    spacing = header_numbers(first, "PixelSpacing", 2, path, series.uid)
    if rows < 1 or columns < 1 or not np.all(spacing > 0):
        raise InputError(f"{shown(path)}: series {series.uid}: {rows} x {columns} pixels of {list(spacing)} mm: not "
                         "an image (PixelSpacing must be positive)")
    for i in order:
        ds, path = series.headers[i], series.files[i]
        if (_integer(ds, "Rows", 0, path, series.uid), _integer(ds, "Columns", 0, path, series.uid)) != (
                rows, columns) or not np.allclose(header_numbers(ds, "PixelSpacing", 2, path, series.uid), spacing,
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
        ds = dcmread(path, force=True)  # the scan found it to be DICOM, with or without a preamble
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
    _check_unambiguous(series)
    _check_one_frame(series)
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
    image.SetOrigin(tuple(float(v) for v in header_numbers(series.headers[first], "ImagePositionPatient", 3,
                                                    series.files[first], series.uid)))
    image.SetDirection(tuple(float(v) for v in np.stack([row, col, normal], axis=1).ravel()))
    return SeriesVolume(image=image, headers=[series.headers[i] for i in order], series=series,
                        notes=series.notes + notes)


def _in_file_order(series: Series) -> list[Dataset]:
    return [ds for _, ds in sorted(zip(series.files, series.headers, strict=True), key=lambda pair: pair[0])]


def read_pet_suv(series: Series, method: SuvMethod = DEFAULT_SUV_METHOD, weight_kg: float | None = None) -> tuple[
        SeriesVolume, SuvConversion]:
    """The PET series in SUVbw (float32) and the conversion used; the factor is checked before the pixels
    are read, so a series without SUV is refused at once. A factor per frame (images decay corrected frame by
    frame) is applied slice by slice; the conversion's notes (a dose read as MBq, a tracer that is not FDG)
    join the series' notes, which are warning lines and go into suv.json and results.json."""
    _check_unambiguous(series)  # before the SUV: the copies kept may agree with each other and not with the rest
    headers = _in_file_order(series)
    where = f"{shown(series.folder)}: series {series.uid}"
    conversion = suv_conversion(headers, method=method, weight_kg=weight_kg, source=where)
    volume = read_series(series)
    values = sitk.GetArrayFromImage(volume.image).astype(np.float32)
    if conversion.frame_factors:
        # The volume's slices are the same header objects as the file-order list the factors follow.
        by_header = {id(ds): conversion.factor_of(k) for k, ds in enumerate(headers)}
        values *= np.array([by_header[id(ds)] for ds in volume.headers], dtype=np.float32)[:, None, None]
    else:
        values *= np.float32(conversion.factor)
    suv = sitk.GetImageFromArray(values)
    suv.CopyInformation(volume.image)
    notes = volume.notes + [f"{where}: {note}" for note in conversion.notes]
    return SeriesVolume(image=suv, headers=volume.headers, series=series, notes=notes), conversion


def fusion_notes(pet: Series, ct: Series) -> list[str]:
    """What a user must know about fusing ``ct`` with ``pet`` by their patient coordinates; InputError when
    they cannot be fused. Coordinates are comparable within one frame of reference (FrameOfReferenceUID,
    PS3.3 C.7.4.1): a CT in another frame (or one not given) is fused only when both series belong to one study
    (one visit on one scanner: PET/CT scanners write one frame for both, and a study that holds another was
    usually re-registered or re-exported), with this note; across studies it is refused."""
    pet_frame, ct_frame = pet.frame_of_reference, ct.frame_of_reference
    if pet_frame and pet_frame == ct_frame:
        return []
    pet_study, ct_study = (str(s.first.get("StudyInstanceUID", "") or "") for s in (pet, ct))
    frames = (f"frame of reference {ct_frame or '(not given)'}, the PET series {pet.uid} in "
              f"{pet_frame or '(not given)'}")
    if not pet_study or pet_study != ct_study:
        raise InputError(f"{ct.where}: the CT is in {frames}, and in study {ct_study or '(not given)'}, the PET in "
                         f"study {pet_study or '(not given)'}: coordinates of two frames of reference are not "
                         "comparable; give the CT of the PET's study")
    return [f"CT series {ct.uid} is in {frames}: fused by patient coordinates since both are of study {pet_study}; "
            "check the PET/CT alignment"]


def load_case(study: Study, pet_series: str | None = None, ct_series: str | None = None,
              suv_method: SuvMethod = DEFAULT_SUV_METHOD, weight_kg: float | None = None) -> DicomCase:
    """Choose, check and read one study: PET in SUV and CT in HU, each on its own grid."""
    pet_choice, ct_choice = choose_series(study, pet_series, ct_series)
    notes = fusion_notes(pet_choice, ct_choice)
    pet, conversion = read_pet_suv(pet_choice, suv_method, weight_kg)
    ct = read_series(ct_choice)
    ct.notes.extend(notes)
    return DicomCase(study=study, pet=pet, ct=ct, suv=conversion)


