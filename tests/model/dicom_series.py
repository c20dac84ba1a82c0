"""PET and CT series made with pydicom that carry the tag sets real scanners write (Siemens Biograph mCT,
GE Discovery ST with a rescale slope per slice and its private scan time, Philips Gemini TF in counts), for the
tests of model/dicom/, model/suv.py and model/seg.py."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

PET_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
F18_HALF_LIFE = {"siemens": "6586.2", "ge": "6588", "philips": "6586.2"}
SCANNERS = {"siemens": ("SIEMENS", "Biograph128_mCT"), "ge": ("GE MEDICAL SYSTEMS", "Discovery ST"),
            "philips": ("Philips Medical Systems", "GEMINI TF TOF 16")}


@dataclass
class StudyIds:
    study_uid: str = field(default_factory=generate_uid)
    frame_of_reference: str = field(default_factory=generate_uid)
    patient_id: str = "PETCT_0011f3deaf"
    study_date: str = "20200101"


@dataclass
class Grid:
    """Where the slices lie: z positions along the normal, rows/columns, PixelSpacing (row, column)."""

    z: Sequence[float]
    rows: int = 6
    columns: int = 5
    pixel_spacing: tuple[float, float] = (2.0, 3.0)
    origin_xy: tuple[float, float] = (-7.5, -6.0)
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

    def position(self, k: int) -> list[float]:
        row, col = np.array(self.orientation[:3]), np.array(self.orientation[3:])
        normal = np.cross(row, col)
        start = self.origin_xy[0] * row + self.origin_xy[1] * col
        return [round(float(v), 4) for v in start + self.z[k] * normal]


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _base(ids: StudyIds, sop_class: str, modality: str, series_uid: str, description: str, vendor: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.Modality = modality
    ds.Manufacturer, ds.ManufacturerModelName = SCANNERS[vendor]
    ds.PatientName = "Anonymized^"
    ds.PatientID = ids.patient_id
    ds.PatientBirthDate = ""  # type 2: present and empty, as anonymisers leave it
    ds.PatientSex = "M"
    ds.PatientAge = "064Y"
    ds.PatientSize = "1.78"
    ds.PatientWeight = "75"
    ds.StudyInstanceUID = ids.study_uid
    ds.StudyDate = ids.study_date
    ds.StudyTime = "091000"
    ds.StudyDescription = "PET-CT Ganzkoerper  primaer mit KM"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.SeriesInstanceUID = series_uid
    ds.SeriesDescription = description
    ds.SeriesNumber = 7 if modality == "PT" else 2
    ds.FrameOfReferenceUID = ids.frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "FFS"
    ds.BodyPartExamined = "WHOLEBODY"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    return ds


def _geometry(ds: Dataset, grid: Grid, k: int, thickness: float) -> None:
    ds.ImagePositionPatient = grid.position(k)
    ds.ImageOrientationPatient = list(grid.orientation)
    ds.PixelSpacing = list(grid.pixel_spacing)
    ds.SliceThickness = f"{thickness:g}"
    ds.SliceLocation = f"{grid.position(k)[2]:g}"
    ds.Rows, ds.Columns = grid.rows, grid.columns
    ds.InstanceNumber = k + 1


def pet_datasets(values: np.ndarray, grid: Grid, ids: StudyIds, *, vendor: str = "siemens",
                 series_uid: str | None = None, series_time: str = "102000", injection_time: str = "091500",
                 acquisition_times: Sequence[str] | None = None, dose_bq: float = 3.5e8,
                 description: str = "PET WB AC") -> list[Dataset]:
    """One dataset per slice of ``values`` (Z, Y, X: Bq/ml, or counts for Philips), stored as 16-bit integers
    with a rescale slope per slice (as GE, and Siemens too, write them)."""
    series_uid = series_uid or generate_uid()
    datasets = []
    for k, plane in enumerate(values):
        ds = _base(ids, PET_STORAGE, "PT", series_uid, description, vendor)
        ds.SOPInstanceUID = generate_uid()
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = ids.study_date
        ds.SeriesTime = series_time
        ds.AcquisitionTime = acquisition_times[k] if acquisition_times else series_time
        ds.ContentTime = series_time
        ds.SeriesType = ["WHOLE BODY", "IMAGE"]
        ds.Units = "CNTS" if vendor == "philips" else "BQML"
        ds.CountsSource = "EMISSION"
        ds.DecayCorrection = "START"
        ds.CorrectedImage = ["NORM", "DTIM", "ATTN", "SCAT", "DECY", "RAN"]
        ds.RandomsCorrectionMethod = "DLYD"
        ds.AttenuationCorrectionMethod = "measured,AC_CT"
        ds.ReconstructionMethod = "PSF+TOF 3i21s"
        ds.DecayFactor = "1.21"
        ds.FrameReferenceTime = "0"
        ds.ActualFrameDuration = 150000
        ds.NumberOfSlices = len(values)
        ds.ImageIndex = k + 1
        info = Dataset()
        info.Radiopharmaceutical = "Fluorodeoxyglucose"
        info.RadiopharmaceuticalVolume = "0"
        info.RadiopharmaceuticalStartTime = injection_time
        info.RadionuclideTotalDose = f"{dose_bq:g}"
        info.RadionuclideHalfLife = F18_HALF_LIFE[vendor]
        info.RadionuclidePositronFraction = "0.97"
        info.RadionuclideCodeSequence = DicomSequence([_code("77004003", "SCT", "^18^Fluorine")])
        if vendor == "siemens":
            info.RadiopharmaceuticalStartDateTime = ids.study_date + injection_time
        ds.RadiopharmaceuticalInformationSequence = DicomSequence([info])
        ds.CollimatorType = "NONE"
        # The NM/PET Patient Orientation module (type 2 sequences): supine, feet first, as "FFS" said.
        orientation = _code("102538003", "SCT", "recumbent")
        orientation.PatientOrientationModifierCodeSequence = DicomSequence([_code("40199007", "SCT", "supine")])
        ds.PatientOrientationCodeSequence = DicomSequence([orientation])
        ds.PatientGantryRelationshipCodeSequence = DicomSequence([_code("102541007", "SCT", "feet-first")])
        del ds.PatientPosition  # beside these codes it "shall not be present" (dciodvfy)
        _geometry(ds, grid, k, thickness=3.0)
        peak = float(np.abs(plane).max())
        slope = peak / 32767.0 if peak > 0 else 1.0
        ds.PixelRepresentation = 1 if vendor == "ge" else 0
        dtype = np.int16 if vendor == "ge" else np.uint16
        ds.RescaleSlope = f"{slope:.10g}"
        ds.RescaleIntercept = "0"
        stored = np.round(plane / float(ds.RescaleSlope)).astype(dtype)
        ds.PixelData = stored.tobytes()
        if vendor == "ge":
            block = ds.private_block(0x0009, "GEMS_PETD_01", create=True)
            block.add_new(0x0D, "DT", ids.study_date + series_time)
        datasets.append(ds)
    return datasets


def ct_datasets(hu: np.ndarray, grid: Grid, ids: StudyIds, *, series_uid: str | None = None,
                description: str = "CT WB 3.0 B30f", vendor: str = "siemens") -> list[Dataset]:
    """One CT slice per plane of ``hu`` (Z, Y, X), stored as unsigned values with intercept -1024."""
    series_uid = series_uid or generate_uid()
    datasets = []
    for k, plane in enumerate(hu):
        ds = _base(ids, CT_STORAGE, "CT", series_uid, description, vendor)
        ds.SOPInstanceUID = generate_uid()
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "CT_SOM5 SPI"]
        ds.SeriesDate = ds.AcquisitionDate = ids.study_date
        ds.SeriesTime = ds.AcquisitionTime = "100500"
        ds.AcquisitionNumber = 1
        ds.KVP = "120"
        ds.ConvolutionKernel = "B30f"
        ds.GantryDetectorTilt = "0"
        _geometry(ds, grid, k, thickness=3.0)
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.PixelData = np.clip(np.round(plane) + 1024, 0, 4095).astype(np.uint16).tobytes()
        datasets.append(ds)
    return datasets


def write_series(datasets: Sequence[Dataset], folder: Path, pattern: str = "{k:04d}.dcm", raw: bool = False
                 ) -> list[Path]:
    """Write the datasets as DICOM files (preamble and meta information) into ``folder``; ``raw``: as old
    exports did, the bare data set in implicit VR little endian, without preamble or meta information."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, ds in enumerate(datasets):
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = folder / pattern.format(k=k, uid=ds.SOPInstanceUID)
        if raw:
            bare = Dataset()
            bare.update(ds)
            bare.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
        else:
            ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


DCIODVFY = shutil.which("dciodvfy")  # dicom3tools (Debian: apt-get install dicom3tools), David Clunie's validator


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """The errors and warnings that dciodvfy reports for a file against its IOD (the standard's modules)."""
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60, check=False)
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines()]
    return [x for x in lines if x.startswith("Error")], [x for x in lines if x.startswith("Warning")]


def ge_gaps(count: int, usual: float = 3.27) -> list[float]:
    """``count`` gaps between the slices of a GE Discovery ST whole body, as a real 267-slice series has them:
    mostly 3.27 mm, four of 3.29 and one of 3.19 at bed overlaps (scaled when ``usual`` is another spacing)."""
    gaps = [usual] * count
    for k, ratio in zip(range(count // 5, count, max(1, count // 5)), [3.29, 3.29, 3.19, 3.29, 3.29], strict=False):
        gaps[k] = usual * ratio / 3.27
    return gaps


def ge_multi_bed(values: np.ndarray, grid: Grid, ids: StudyIds, *, beds: int = 6, series_time: str = "102000",
                 **kwargs) -> list[Dataset]:
    """A static whole-body series as a GE Discovery ST writes it: SeriesType STATIC\\IMAGE, a rescale slope per
    slice, the private scan time (0009,100D), each bed's own AcquisitionTime, and NumberOfTimeSlices (0054,0101)
    filled per bed: 1 to ``beds`` across the one series, ``beds`` in the first file (file order is head first,
    the last bed's slices first)."""
    datasets = pet_datasets(values, grid, ids, vendor="ge", series_time=series_time, **kwargs)
    per_bed = -(-len(datasets) // beds)
    for k, ds in enumerate(datasets):
        bed = beds - min(k // per_bed, beds - 1)  # the first files: the last bed
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.NumberOfTimeSlices = bed
        minutes = 3 * (bed - 1)
        ds.AcquisitionTime = f"{int(series_time[:2]):02d}{int(series_time[2:4]) + minutes:02d}{series_time[4:]}"
        ds.ActualFrameDuration = 180000
    return datasets
