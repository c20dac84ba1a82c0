"""DICOM PET/CT in: find the studies of a folder and their series (``scan``), choose each study's PET and CT
series (``choice``), read a series into one volume or refuse it in one line (``volume``), and the converter
``python -m studies.dicom DICOM_DIR OUT_DIR`` (``convert``). The names below are the package's interface; import
them from here."""

from studies.dicom.choice import choose_series, resolve_series_choice, series_in_folder
from studies.dicom.convert import case_notes, convert, convert_study, main, study_folders
from studies.dicom.scan import Series, Study, print_warning, scan_folder
from studies.dicom.volume import DicomCase, SeriesVolume, fusion_notes, load_case, read_pet_suv, read_series

__all__ = [
    "DicomCase", "Series", "SeriesVolume", "Study", "case_notes", "choose_series", "convert", "convert_study",
    "fusion_notes", "load_case", "main", "print_warning", "read_pet_suv", "read_series", "resolve_series_choice",
    "scan_folder",
    "series_in_folder", "study_folders",
]
