"""``python -m studies.dicom DICOM_DIR OUT_DIR``: every study of an export to the autoPET layout
(``<patient>/<study UID>/{SUV,CTres}.nii.gz`` and ``suv.json``); one study's failure leaves the others to run.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from model.arguments import OneLineParser, body_weight_kg, input_folder, output_folder
from model.errors import InputError, WriteError, describe, one_line, show_warnings_as_lines, shown, warnings_about
from model.files import atomic_write_bytes
from model.geometry import CT_FILL_HU, resample_onto
from studies.autopet import AUTOPET_CT, AUTOPET_PET
from studies.dicom.choice import resolve_series_choice
from studies.dicom.scan import Study, print_warning, scan_folder
from studies.dicom.volume import DicomCase, load_case
from studies.readers import write_image_atomic
from studies.suv import DEFAULT_SUV_METHOD, SUV_METHODS, SuvMethod


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
    elif any((folder / name).exists() for name in (AUTOPET_PET, AUTOPET_CT)):
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
        for image, name in ((case.pet.image, AUTOPET_PET), (ct_on_pet, AUTOPET_CT)):
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
            suv_method: SuvMethod = DEFAULT_SUV_METHOD, weight_kg: float | None = None) -> int:
    """Convert every study of ``dicom_dir``; a failed study is one line on stderr and the others go on.
    Returns the number of failed studies."""
    studies = scan_folder(dicom_dir)
    if not studies:
        raise InputError(f"{shown(dicom_dir)}: no DICOM images found")
    pet_series, ct_series = resolve_series_choice(studies, pet_series, ct_series)  # a UID, or a [number]
    failures = 0
    for study, folder_name in zip(studies, study_folders(studies), strict=True):
        try:
            with warnings_about(study.label()):  # a library's warning names the study it is about
                line = _convert_one(study, folder_name, out_dir, pet_series, ct_series, suv_method, weight_kg)
        except (InputError, WriteError) as error:
            failures += 1
            print(f"error: {error}", file=sys.stderr)
            continue
        except Exception as error:  # not foreseen (OverflowError...), still this study's alone: the others go on
            failures += 1
            print(f"error: {one_line(study.label())}: conversion failed ({describe(error)})", file=sys.stderr)
            continue
        print(line, flush=True)
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m studies.dicom",
        description="DICOM PET/CT studies to OUT_DIR/<patient>/<study UID>/{SUV,CTres}.nii.gz and suv.json: the "
                    "autoPET layout that `python -m train prepare --layout tcia` reads once each study folder "
                    "also holds its SEG.nii.gz (0/1 lesion mask).")
    parser.add_argument("dicom_dir", type=input_folder)
    parser.add_argument("out_dir", type=output_folder)
    parser.add_argument("--pet-series", default=None, help="the PET series: its SeriesInstanceUID or its [number] "
                        "in the listing a study with several candidates prints")
    parser.add_argument("--ct-series", default=None, help="the CT series: its UID or its [number] in that listing")
    parser.add_argument("--suv-method", default=DEFAULT_SUV_METHOD, choices=SUV_METHODS,
                        help="qiba (default) or autopet (the training data's conversion)")
    parser.add_argument("--weight-kg", type=body_weight_kg, default=None,
                        help="body weight when PatientWeight is missing")
    try:
        args = parser.parse_args(argv)
        show_warnings_as_lines()
        failures = convert(args.dicom_dir, args.out_dir, args.pet_series, args.ct_series, args.suv_method,
                           args.weight_kg)
    except (InputError, WriteError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 1 if failures else 0
