"""PET and CT series made with pydicom that carry the tag sets real scanners write (Siemens Biograph mCT,
GE Discovery ST with a rescale slope per slice and its private scan time, Philips Gemini TF in counts), for the
tests of studies/dicom/, studies/suv/ and results/seg.py."""

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


# --- The IBSI SUV manual's digital reference objects (oncoray/suv_computation, docs/DRO_list.csv), rebuilt here
# from their one-line descriptions and the manual's formulas (no file of theirs is used): each encodes, through
# another header path, a volume whose SUVbw is 0.20 (a cold voxel), 1.00 (background) and 4.00 (a hot voxel) in
# every slice. The stored values are worked out here, independently of studies/suv/.
DRO_SUVBW = np.array([[0.2, 1.0, 1.0], [1.0, 1.0, 4.0]])
DRO_GRID = Grid(z=[3.0 * k for k in range(4)], rows=2, columns=3)
DRO_WEIGHT_KG, DRO_HEIGHT_M, DRO_DOSE_BQ = 70.0, 1.75, 3.5e8
F18 = 6586.2


def _t_ave(duration_s: float, half_life_s: float) -> float:
    rate = np.log(2) / half_life_s
    return float(np.log(rate * duration_s / (1 - np.exp(-rate * duration_s))) / rate)


def _seconds(hhmmss: str) -> float:
    return int(hhmmss[:2]) * 3600 + int(hhmmss[2:4]) * 60 + float(hhmmss[4:])


def _bqml(decay_s, half_life_s: float = F18, dose_bq: float = DRO_DOSE_BQ) -> np.ndarray:
    """Bq/ml of every slice: SUVbw x (dose decayed over ``decay_s``, one per slice or one for all) / weight[g]."""
    decays = np.broadcast_to(np.asarray(decay_s, dtype=float), (len(DRO_GRID.z),))
    doses = dose_bq * 2.0 ** (-decays / half_life_s)
    return DRO_SUVBW[None] * doses[:, None, None] / (DRO_WEIGHT_KG * 1000.0)


def _dro(values: np.ndarray, vendor: str = "siemens", **kwargs) -> list[Dataset]:
    kwargs.setdefault("dose_bq", DRO_DOSE_BQ)
    datasets = pet_datasets(values, DRO_GRID, StudyIds(), vendor=vendor, **kwargs)
    for ds in datasets:
        ds.PatientWeight, ds.PatientSize, ds.PatientSex = f"{DRO_WEIGHT_KG:g}", f"{DRO_HEIGHT_M:g}", "M"
    return datasets


def _set(datasets: list[Dataset], **values) -> list[Dataset]:
    for ds in datasets:
        for keyword, value in values.items():
            setattr(ds, keyword, value)
    return datasets


def _rescale_each_slice(datasets: list[Dataset]) -> list[Dataset]:
    """Another RescaleSlope in every slice (1, 1.5, 2, 2.5 times the first), the stored values requantised."""
    for k, ds in enumerate(datasets):
        slope = float(ds.RescaleSlope)
        dtype = np.int16 if ds.PixelRepresentation else np.uint16
        stored = np.frombuffer(ds.PixelData, dtype=dtype).astype(float)
        new_slope = slope * (1 + 0.5 * k)
        ds.RescaleSlope = f"{new_slope:.10g}"
        ds.PixelData = np.round(stored * slope / float(ds.RescaleSlope)).astype(dtype).tobytes()
    return datasets


def _philips_tag(datasets: list[Dataset], element: int, value: float) -> list[Dataset]:
    for ds in datasets:  # no private creator (7053,0010), as the issue found the DROs
        ds.add_new(0x70531000 | element, "DS", f"{value:.10g}")
    return datasets


def _two_beds(datasets: list[Dataset], times: list[str], reference_ms: list[int], duration_ms: int) -> list[Dataset]:
    for k, ds in enumerate(datasets):
        bed = k * 2 // len(datasets)
        ds.AcquisitionTime, ds.FrameReferenceTime = times[bed], f"{reference_ms[bed]}"
        ds.ActualFrameDuration = duration_ms
    return datasets


def _lbm_james128_male() -> float:
    height_cm = DRO_HEIGHT_M * 100
    return 1.10 * DRO_WEIGHT_KG - 128 * (DRO_WEIGHT_KG / height_cm) ** 2


def _series_after_acquisition(vendor: str) -> list[Dataset]:
    """START, SeriesTime 11:30:00 after two beds' acquisitions at 11:02:30 and 11:05:00 (603 s frames); the
    scan start is the manual's t_acq + T_ave - FrameReferenceTime (GE: t_acq - FrameReferenceTime)."""
    half_life = 6588.0 if vendor == "ge" else F18
    t_ave = 0.0 if vendor == "ge" else _t_ave(603.0, half_life)
    start = _seconds("110230") + t_ave - 450.0
    datasets = _dro(_bqml(start - _seconds("091500"), half_life), vendor, series_time="113000")
    for ds in datasets if vendor == "ge" else ():  # GE keeps the scan start in its private (0009,100D)
        hours, rest = divmod(round(start), 3600)
        ds.private_block(0x0009, "GEMS_PETD_01")[0x0D].value = f"20200101{hours:02d}{rest // 60:02d}{rest % 60:02d}"
    return _two_beds(datasets, ["110230", "110500"], [450000, round((_seconds("110500") + t_ave - start) * 1000)],
                     603000)


def _decay_none() -> list[Dataset]:
    """NONE: two beds at 10:20:00 and 10:22:30, 150 s frames; values as measured, at t_acq + T_ave."""
    t_ave = _t_ave(150.0, F18)
    decays = [_seconds(t) + t_ave - _seconds("091500") for t in ("102000", "102000", "102230", "102230")]
    datasets = _set(_dro(_bqml(decays)), DecayCorrection="NONE")  # CorrectedImage left with DECY, as theirs
    return _two_beds(datasets, ["102000", "102230"], [0, 0], 150000)


def _midnight() -> list[Dataset]:
    datasets = _dro(_bqml(3900.0), series_time="003500", injection_time="233000")
    for ds in datasets:
        ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20200102"
        del ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime
    return datasets


def _ga68() -> list[Dataset]:
    datasets = _dro(_bqml(3900.0, 4057.7))
    for ds in datasets:
        ds.RadiopharmaceuticalInformationSequence[0].RadionuclideHalfLife = "4057.7"
    return datasets


def _without(datasets: list[Dataset], keyword: str) -> list[Dataset]:
    for ds in datasets:
        delattr(ds.RadiopharmaceuticalInformationSequence[0], keyword)
    return datasets


_BSA = 0.007184 * (DRO_HEIGHT_M * 100) ** 0.725 * DRO_WEIGHT_KG ** 0.425
_IBW_MALE = 48.0 + 1.06 * (DRO_HEIGHT_M * 100 - 152)
_SUV_SCALE, _ACTIVITY_SCALE = 2.5e-4, 0.02
DRO_BUILDERS = {  # ID: (description in DRO_list.csv, builder); 09:15:00 to 10:20:00 = 3900 s unless said
    "DRO_0_0": ("Default DRO", lambda: _dro(_bqml(3900.0))),
    "DRO_1_0": ("multiple values Rescale Slope", lambda: _rescale_each_slice(_dro(_bqml(3900.0)))),
    "DRO_2_0": ('Units are "GML" corresponding to SUVbw', lambda: _set(_dro(DRO_SUVBW[None].repeat(4, 0)),
                                                                       Units="GML")),
    "DRO_2_1": ('Units are "GML" with Patient\'s Sex "M" corresponding to SUVlbmjames128',
                lambda: _set(_dro(DRO_SUVBW[None].repeat(4, 0) * _lbm_james128_male() / DRO_WEIGHT_KG), Units="GML",
                             SUVType="LBMJAMES128")),
    "DRO_2_2": ('Units are "GML" with Patient\'s Sex "M" corresponding to SUVibw',
                lambda: _set(_dro(DRO_SUVBW[None].repeat(4, 0) * _IBW_MALE / DRO_WEIGHT_KG), Units="GML",
                             SUVType="IBW")),
    "DRO_2_3": ('Units are "CM2ML" corresponding to SUVbsa',
                lambda: _set(_dro(DRO_SUVBW[None].repeat(4, 0) * _BSA * 1e4 / (DRO_WEIGHT_KG * 1000)),
                             Units="CM2ML", SUVType="BSA")),
    "DRO_2_4": ('Units are "CNTS" using Philips SUV scale factor',
                lambda: _philips_tag(_dro(DRO_SUVBW[None].repeat(4, 0) / _SUV_SCALE, "philips"), 0x00, _SUV_SCALE)),
    "DRO_2_5": ('Units are "CNTS" using Philips activity scale factor',
                lambda: _philips_tag(_dro(_bqml(3900.0) / _ACTIVITY_SCALE, "philips"), 0x09, _ACTIVITY_SCALE)),
    "DRO_3_0": ("Dose in MBq", lambda: _set(_dro(_bqml(3900.0), dose_bq=DRO_DOSE_BQ / 1e6))),
    "DRO_3_1": ('Decay Correction is "ADMIN"', lambda: _set(_dro(_bqml(0.0)), DecayCorrection="ADMIN")),
    "DRO_3_2": ('Decay Correction is "START" but Series Date/Time after Acquisition Date/Time (Siemens)',
                lambda: _series_after_acquisition("siemens")),
    "DRO_3_3": ('Decay Correction is "START" but Series Date/Time after Acquisition Date/Time and private scan '
                'start datetime present (GE)', lambda: _series_after_acquisition("ge")),
    "DRO_3_4": ('Decay Correction is "NONE" and multiple values Acquisition Date/Time', _decay_none),
    "DRO_4_0": ("Radiopharmaceutical Start DateTime present and Radiopharmaceutical Start Time absent",
                lambda: _without(_dro(_bqml(3900.0)), "RadiopharmaceuticalStartTime")),
    "DRO_4_1": ("Radiopharmaceutical Start Time present and Radiopharmaceutical Start DateTime absent",
                lambda: _without(_dro(_bqml(3900.0)), "RadiopharmaceuticalStartDateTime")),
    "DRO_4_2": ("Uptake time sparing midnight and Radiopharmaceutical Start DateTime absent", _midnight),
    "DRO_5_0": ("Radionuclide Ga68", _ga68),
}
