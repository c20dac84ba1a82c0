"""The cases of a run, one CaseSource each, from the input layouts of ``INPUT_LAYOUTS`` (one entry each: how
it is recognised and how it lists its cases): the grand-challenge layout (images/pet + images/ct), an autoPET
release tree, one per study of a DICOM export, one PET and one CT given by path (each a .mha/.nii/.nii.gz
file or a DICOM series folder), or the rows of a manifest CSV. ``find_cases`` walks the table.

Listing a case reads DICOM headers only; its ``load()`` reads the pixels (runner.pipeline's read stage, which
runner.cohort runs in a worker thread while the previous case runs on the device). A study whose series
cannot be chosen (two PET candidates, no CT) is still listed: its ``load()`` raises that one-line
InputError, so it fails as that one case, the other studies go on, and messages, exit code and results.json
treat it as any bad input.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import SimpleITK as sitk
from pydicom.dataset import Dataset

from model.errors import InputError, describe, shown
from model.files import open_regular
from studies.autopet import AUTOPET_CT, AUTOPET_MASK, AUTOPET_PET
from studies.dicom import (
    Series,
    Study,
    choose_series,
    fusion_notes,
    read_pet_suv,
    read_series,
    resolve_series_choice,
    scan_folder,
    series_in_folder,
)
from studies.readers import IMAGE_SUFFIXES, image_format, image_stem, is_image_name, read_image, read_images
from studies.suv import DEFAULT_SUV_METHOD, SuvConversion, SuvMethod, check_suv_options

DICOM_MASK_SUFFIX = ".nii.gz"  # the mask of DICOM input: on the PET grid, as the converter writes SUV.nii.gz


@dataclass
class LoadedCase:
    pet: sitk.Image  # SUV (float32), the grid of the mask
    ct: sitk.Image  # HU, any grid (segment() resamples it onto the PET)
    suv: SuvConversion | None = None  # DICOM PET only: how its SUV was computed
    pet_headers: list[Dataset] | None = None  # DICOM PET only, in slice order: what write_seg references
    warnings: list[str] | None = None  # DICOM only: files skipped, images not used (results.json "warnings")


@dataclass(frozen=True)
class CaseSource:
    name: str  # output stem (file-safe)
    pet_label: str  # what messages and results.json name: a file, or a series folder and UID
    ct_label: str
    mask_suffix: str  # ".mha" or ".nii.gz" (NIfTI and DICOM input)
    is_dicom: bool  # the PET is a DICOM series: SUV computed here, and a DICOM SEG is written
    load: Callable[[], LoadedCase]  # reads the images (InputError with one line); may run in a worker thread
    pet_path: Path | None = None  # the PET when it is an image file: its header gives the mask's grid


def mask_suffix(image_path: Path) -> str:
    """The mask's format follows its input's: NIfTI (.nii, .nii.gz) or a DICOM folder in, compressed NIfTI
    out; else MetaImage."""
    path = Path(image_path)
    found = None if path.is_dir() else image_format(path.name)
    return found.mask_suffix if found is not None else ".nii.gz"


def list_images(folder: Path, role: str) -> list[Path]:
    """The images of a folder, sorted by name; hidden files (macOS ``._case.mha``, temporary files) are not
    images. Anything else with an image suffix is listed, so that a bad file is refused by name, not skipped."""
    if not folder.is_dir():
        raise InputError(f"{shown(folder)}: {role} folder missing")
    try:
        found = sorted(p for p in folder.iterdir() if is_image_name(p.name) and not p.is_dir())
    except OSError as error:
        raise InputError(f"{shown(folder)}: {role} folder cannot be listed ({error.strerror})") from None
    if not found:
        raise InputError(f"{shown(folder)}: no {role} image ({', '.join('*' + s for s in IMAGE_SUFFIXES)}) "
                         "in this folder")
    return found


# The fixed file names of a study of the autoPET NIfTI release (Patient/Study/{SUV,CTres,...}.nii.gz): every
# study has them, so a case read from one is named after its folders instead.
AUTOPET_STUDY_FILES = {"PET": (AUTOPET_PET,), "CT": (AUTOPET_CT,)}
AUTOPET_FIXED_STEMS = frozenset({*(name.removesuffix(".nii.gz") for name in (AUTOPET_PET, AUTOPET_CT, AUTOPET_MASK)),
                                 "PET", "CT"})


NAMING_RULE = ("a case is named after its CT, as grand-challenge names the mask: the CT file's stem (an autoPET "
               "release file, Patient/Study/CTres.nii.gz, by its folders: <patient>_<study>), a DICOM CT series by its "
               "study (<patient>_<date>_<study UID's last digits>); a manifest's name column overrides")


def file_case_name(ct_path: Path) -> str:
    """The name of a case whose CT is the file ``ct_path`` (``NAMING_RULE``): its stem, except a file of the
    autoPET release (``Patient/Study/CTres.nii.gz``), named ``<patient>_<study>`` (spaces as ``_``): otherwise
    every such study would be ``CTres``."""
    path = Path(ct_path)
    stem = image_stem(path)
    if stem not in AUTOPET_FIXED_STEMS or not path.parent.parent.name:
        return stem
    return f"{path.parent.parent.name}_{path.parent.name}".replace(" ", "_")


def case_naming(ct_path: Path, ct: Series | None) -> tuple[str, str]:
    """The one rule for every input layout (``NAMING_RULE``): a case's name and its mask's suffix follow its
    CT, whichever way the study was given (grand-challenge layout, --pet/--ct, a manifest row): the CT file's
    stem and format, or a DICOM CT series' study name and NIfTI."""
    if ct is not None:
        return _study_name(ct), DICOM_MASK_SUFFIX
    return file_case_name(ct_path), mask_suffix(ct_path)


def autopet_study_folders(root: Path) -> list[Path]:
    """The study folders of an autoPET NIfTI release (or a copy of part of it) under ``root``: each holds
    SUV.nii.gz and CTres.nii.gz. Sorted; unreadable folders are passed over."""
    pet_name, ct_name = AUTOPET_STUDY_FILES["PET"][0], AUTOPET_STUDY_FILES["CT"][0]
    found = []
    for folder, _, files in os.walk(root):
        if pet_name in files and ct_name in files:
            found.append(Path(folder))
    return sorted(found)


def autopet_cases(root: Path) -> list[CaseSource]:
    """One case per study folder of the autoPET NIfTI release: its SUV.nii.gz and CTres.nii.gz, named
    ``<patient>_<study>``; two studies of one name are refused."""
    cases = [path_case(folder / AUTOPET_STUDY_FILES["PET"][0], folder / AUTOPET_STUDY_FILES["CT"][0])
             for folder in autopet_study_folders(root)]
    names = [case.name for case in cases]
    for name in names:
        if names.count(name) > 1:
            raise InputError(f"{shown(root)}: two studies are both case {shown(name)}: rename one folder")
    return cases


def describe_input_folder(folder: Path) -> str:
    """Why a folder given as --input holds nothing this program reads, and what to give instead."""
    accepted = ("--input takes a folder with images/pet and images/ct (grand-challenge layout), an autoPET "
                "release tree (Patient/Study/SUV.nii.gz + CTres.nii.gz) or a DICOM export")
    if (folder / "pet").is_dir() and (folder / "ct").is_dir():
        return f"{shown(folder)}: holds pet/ and ct/: give its parent folder ({accepted})"
    images = [name for _, _, files in os.walk(folder) for name in files if is_image_name(name)]
    if images:
        return (f"{shown(folder)}: holds {len(images)} image file(s) but none of the accepted layouts: give one study "
                f"with --pet/--ct, several with --manifest FILE.csv ({accepted})")
    return f"{shown(folder)}: no DICOM images or image files found ({accepted})"


def layout_cases(input_dir: Path) -> list[CaseSource]:
    """The grand-challenge layout: ``images/pet`` and ``images/ct`` paired by sorted file name, each case named
    after its CT's file stem (on grand-challenge its uuid: the challenge's rule, which ``NAMING_RULE`` follows
    everywhere) and its mask in the CT's format. Two CTs with one case name
    (``x.mha`` and ``x.nii``) would write one mask: refused, as are unequal counts."""
    input_dir = Path(input_dir)
    pets = list_images(input_dir / "images" / "pet", "PET")
    cts = list_images(input_dir / "images" / "ct", "CT")
    if len(pets) != len(cts):
        raise InputError(f"{shown(input_dir / 'images')}: {len(pets)} PET and {len(cts)} CT images; "
                         "each PET needs one CT (paired by sorted file name)")
    seen: dict[str, Path] = {}
    for ct_path in cts:
        stem = image_stem(ct_path)
        if stem in seen:
            raise InputError(f"{shown(ct_path.parent)}: {shown(seen[stem].name)} and {shown(ct_path.name)} are both "
                             f"case {shown(stem)}, whose mask is named after it: keep one")
        seen[stem] = ct_path
    return [CaseSource(name=image_stem(ct_path), pet_label=shown(pet_path), ct_label=shown(ct_path),
                       mask_suffix=mask_suffix(ct_path), is_dicom=False,
                       load=partial(_load_paths, pet_path, ct_path, None, None, DEFAULT_SUV_METHOD, None),
                       pet_path=pet_path)
            for pet_path, ct_path in zip(pets, cts, strict=True)]


def series_label(series: Series) -> str:
    return f"{shown(series.folder)} (series {series.uid})"


def _unique(names: list[str]) -> list[str]:
    """Names made distinct (``_2``, ``_3``...): two studies must never write each other's files."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return unique


def _load_dicom(pet: Series, ct: Series, suv_method: SuvMethod, weight_kg: float | None,
                skipped: tuple[str, ...] = ()) -> LoadedCase:
    fused = fusion_notes(pet, ct)  # refused before any pixel is read
    volume, conversion = read_pet_suv(pet, suv_method, weight_kg)
    ct_volume = read_series(ct)
    # Issue 16: the study's skipped files and the images not used go into its results.json entry (issue 23: and
    # a CT fused from another frame of reference).
    notes = list(dict.fromkeys([*skipped, *volume.notes, *ct_volume.notes, *fused]))
    return LoadedCase(pet=volume.image, ct=ct_volume.image, suv=conversion, pet_headers=volume.headers,
                      warnings=notes)


def _refuse(message: str) -> LoadedCase:
    raise InputError(message)


def dicom_cases(folder: Path, pet_series: str | None = None, ct_series: str | None = None,
                suv_method: SuvMethod = DEFAULT_SUV_METHOD, weight_kg: float | None = None) -> list[CaseSource]:
    """One case per study of a DICOM export (any nesting, any file names), sorted by patient and date.

    Raises InputError only when the folder as a whole cannot be used: missing, no DICOM image in it, a
    ``pet_series`` / ``ct_series`` UID that is in none of its studies, or a bad SUV option. A study whose
    series cannot be chosen is listed with a ``load()`` that raises its one-line error.
    """
    check_suv_options(suv_method, weight_kg)
    if (Path(folder) / "pet").is_dir() and (Path(folder) / "ct").is_dir():  # DIR/images given for DIR
        raise InputError(describe_input_folder(Path(folder)))
    studies = scan_folder(Path(folder))
    if not studies:
        raise InputError(describe_input_folder(Path(folder)))
    pet_series, ct_series = resolve_series_choice(studies, pet_series, ct_series)  # a UID, or a [number]
    cases = []
    for study, name in zip(studies, _unique([s.case_name for s in studies]), strict=True):
        try:
            pet, ct = choose_series(study, pet_series, ct_series)
        except Exception as error:  # this study's alone, foreseen (InputError) or not: its case fails, not the run
            label = study.label()
            why = str(error) if isinstance(error, InputError) else f"{label}: series choice failed ({describe(error)})"
            cases.append(CaseSource(name=name, pet_label=label, ct_label=label, mask_suffix=DICOM_MASK_SUFFIX,
                                    is_dicom=True, load=partial(_refuse, why)))
            continue
        cases.append(CaseSource(name=name, pet_label=series_label(pet), ct_label=series_label(ct),
                                mask_suffix=DICOM_MASK_SUFFIX, is_dicom=True,
                                load=partial(_load_dicom, pet, ct, suv_method, weight_kg, tuple(study.warnings))))
    return cases


def _study_name(series: Series) -> str:
    first = series.first
    return Study(uid=str(first.get("StudyInstanceUID", "")), patient_id=str(first.get("PatientID", "") or ""),
                 date=str(first.get("StudyDate", "") or ""), description="").case_name


def _check_image_path(path: Path, role: str) -> None:
    # A single .dcm file would be read by ITK as one 2D slice: say what to give instead.
    if path.exists() and not is_image_name(path.name):
        raise InputError(f"{shown(path)}: the {role} must be a {'/'.join(IMAGE_SUFFIXES)} file or a DICOM series "
                         "folder")


def _load_paths(pet_path: Path, ct_path: Path, pet: Series | None, ct: Series | None, suv_method: SuvMethod,
                weight_kg: float | None) -> LoadedCase:
    if pet is not None and ct is not None:
        return _load_dicom(pet, ct, suv_method, weight_kg)
    if pet is not None:
        volume, conversion = read_pet_suv(pet, suv_method, weight_kg)
        return LoadedCase(pet=volume.image, ct=read_image(ct_path, "CT"), suv=conversion,
                          pet_headers=volume.headers, warnings=list(volume.notes) or None)
    if ct is not None:
        ct_volume = read_series(ct)
        return LoadedCase(pet=read_image(pet_path, "PET", sitk.sitkFloat32), ct=ct_volume.image,
                          warnings=list(ct_volume.notes) or None)
    pet_image, ct_image = read_images([(pet_path, "PET", sitk.sitkFloat32), (ct_path, "CT", sitk.sitkUnknown)])
    return LoadedCase(pet=pet_image, ct=ct_image)


def path_case(pet_path: Path, ct_path: Path, suv_method: SuvMethod = DEFAULT_SUV_METHOD,
              weight_kg: float | None = None) -> CaseSource:
    """The one case of ``--pet PATH --ct PATH``: each a .mha/.nii/.nii.gz file (the PET already in SUV) or a
    DICOM series folder (holding one series of that modality).

    The case is named after its CT (``NAMING_RULE``: the CT file's stem, and the mask takes its format, or a
    DICOM CT's study, and a NIfTI mask), as the grand-challenge layout names the same study; a DICOM PET gets a
    DICOM SEG. Folders are scanned here (headers only) and
    a folder without exactly one series of its modality raises InputError here, as does ``weight_kg`` for a
    PET that is not DICOM (it is in SUV already); files are read, and checked, by ``load()``.
    """
    check_suv_options(suv_method, weight_kg)
    pet_path, ct_path = Path(pet_path), Path(ct_path)
    pet = series_in_folder(pet_path, "PT") if pet_path.is_dir() else None
    ct = series_in_folder(ct_path, "CT") if ct_path.is_dir() else None
    if pet is None:
        _check_image_path(pet_path, "PET")
        if weight_kg is not None:
            raise InputError(f"{shown(pet_path)}: a PET file is in SUV already; --weight-kg applies to DICOM PET only")
    if ct is None:
        _check_image_path(ct_path, "CT")
    name, suffix = case_naming(ct_path, ct)
    return CaseSource(
        name=name, pet_label=series_label(pet) if pet is not None else shown(pet_path),
        ct_label=series_label(ct) if ct is not None else shown(ct_path), mask_suffix=suffix, is_dicom=pet is not None,
        load=partial(_load_paths, pet_path, ct_path, pet, ct, suv_method, weight_kg),
        pet_path=pet_path if pet is None else None)


def _check_case_name(name: str, where: str) -> None:
    if not name or name.startswith(".") or any(ch in name for ch in "/\\\0"):
        raise InputError(f"{where}: name {name!r} is not a file name (no '/', '\\', and no '.' first)")


def _manifest_case(pet_path: Path, ct_path: Path, name: str, suv_method: SuvMethod,
                   weight_kg: float | None) -> CaseSource:
    try:
        case = path_case(pet_path, ct_path, suv_method, weight_kg)
    except Exception as error:  # this row's folders or options, foreseen or not: its case fails, the others go on
        why = str(error) if isinstance(error, InputError) else f"{shown(pet_path)}: case failed ({describe(error)})"
        # The CT's series could not be chosen, so its study name is unknown: the CT path's own name stands in.
        case = CaseSource(name=file_case_name(ct_path), pet_label=shown(pet_path), ct_label=shown(ct_path),
                          mask_suffix=mask_suffix(ct_path), is_dicom=pet_path.is_dir(),
                          load=partial(_refuse, why))
    return dataclasses.replace(case, name=name) if name else case


def manifest_cases(manifest: Path, suv_method: SuvMethod = DEFAULT_SUV_METHOD,
                   weight_kg: float | None = None) -> list[CaseSource]:
    """One case per row of a CSV with the columns ``pet``, ``ct`` and optionally ``name`` (the output stem;
    without it, after its CT as ``path_case`` names it: ``NAMING_RULE``); relative paths are taken from the
    CSV's folder. Each path is an image file or a DICOM series folder, as for ``path_case``; a row whose
    folders cannot be used fails as its case alone. A manifest that cannot be read, lacks a column, has a row
    without both paths or a name that is not a file name, or gives two rows one case name is refused
    (InputError) as a whole."""
    manifest = Path(manifest)
    where = shown(manifest)
    try:
        # utf-8-sig: spreadsheets write a BOM; open_regular: a FIFO would hang the run
        with open_regular(manifest, "manifest", "r", newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [(field or "").strip().lower() for field in reader.fieldnames or []]
            reader.fieldnames = header
            rows = [(reader.line_num, row) for row in reader]
    except FileNotFoundError:
        raise InputError(f"{where}: manifest missing") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{where}: manifest cannot be read ({getattr(error, 'strerror', None) or error})") from None
    missing = [column for column in ("pet", "ct") if column not in header]
    if missing:
        raise InputError(f"{where}: manifest lacks the column(s) {', '.join(missing)} (a header row pet,ct[,name] "
                         f"is expected; found {', '.join(header) or 'none'})")
    cases: list[CaseSource] = []
    lines: dict[str, int] = {}
    for line, row in rows:
        pet, ct, name = ((row.get(column) or "").strip() for column in ("pet", "ct", "name"))
        if not pet or not ct:
            raise InputError(f"{where}: line {line}: both pet and ct must name a path")
        if "\0" in pet + ct:  # no file name holds one; os.stat would raise ValueError
            raise InputError(f"{where}: line {line}: a path holds a NUL byte")
        if name:
            _check_case_name(name, f"{where}: line {line}")
        pet_path, ct_path = (path if path.is_absolute() else manifest.parent / path
                             for path in (Path(pet).expanduser(), Path(ct).expanduser()))
        case = _manifest_case(pet_path, ct_path, name, suv_method, weight_kg)
        if case.name in lines:
            raise InputError(f"{where}: lines {lines[case.name]} and {line} are both case {shown(case.name)}, whose "
                             "files are named after it: give them distinct names in a name column")
        lines[case.name] = line
        cases.append(case)
    if not cases:
        raise InputError(f"{where}: manifest lists no case")
    return cases


# --- the input layouts: one entry each --------------------------------------------------------------------

@dataclass(frozen=True)
class InputRequest:
    """What a run was given (process.py's input arguments): a folder, one PET and CT, or a manifest."""

    input: Path | None = None  # a folder: grand-challenge layout, autoPET release tree or DICOM export
    pet: Path | None = None
    ct: Path | None = None
    manifest: Path | None = None
    grand_challenge: bool = False  # the container's /input: its layout is given, not recognised
    pet_series: str | None = None  # DICOM export: the PET / CT series to take where a study holds several
    ct_series: str | None = None
    suv_method: SuvMethod | None = None  # None: DEFAULT_SUV_METHOD, and refused by no input (not given)
    weight_kg: float | None = None

    def __post_init__(self) -> None:  # paths may be given as strings (the Python API)
        for name in ("input", "pet", "ct", "manifest"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))

    @property
    def method(self) -> SuvMethod:
        return self.suv_method or DEFAULT_SUV_METHOD

    @property
    def folder_given(self) -> bool:
        return self.input is not None and not self.grand_challenge


@dataclass(frozen=True)
class InputLayout:
    """A kind of input: how a request is recognised as one (the first entry of ``INPUT_LAYOUTS`` that
    recognises it is taken) and how it lists its cases (InputError when the input as a whole is unusable)."""

    name: str
    recognise: Callable[[InputRequest], bool]
    cases: Callable[[InputRequest], list[CaseSource]]


INPUT_LAYOUTS = (
    InputLayout("one study (--pet/--ct)", lambda request: request.pet is not None,
                lambda request: [path_case(request.pet, request.ct, request.method, request.weight_kg)]),
    InputLayout("manifest", lambda request: request.manifest is not None,
                lambda request: manifest_cases(request.manifest, request.method)),
    InputLayout("grand-challenge layout (images/pet, images/ct)",
                lambda request: request.input is not None and (request.grand_challenge
                                                               or (request.input / "images").exists()),
                lambda request: layout_cases(request.input)),
    InputLayout("autoPET release tree (Patient/Study/SUV.nii.gz + CTres.nii.gz)",
                lambda request: request.input is not None and bool(autopet_study_folders(request.input)),
                lambda request: autopet_cases(request.input)),
    InputLayout("DICOM export", lambda request: request.input is not None,  # any other folder
                lambda request: dicom_cases(request.input, request.pet_series, request.ct_series, request.method,
                                            request.weight_kg)),
)


def find_cases(request: InputRequest) -> list[CaseSource]:
    """The run's cases, in order, from the first layout of ``INPUT_LAYOUTS`` that recognises the request;
    InputError when the input as a whole cannot be used, or a DICOM option was given for input without it."""
    if request.folder_given and not request.input.is_dir():
        raise InputError(f"{shown(request.input)}: input folder missing")
    layout = next((layout for layout in INPUT_LAYOUTS if layout.recognise(request)), None)
    if layout is None:
        raise InputError("no input: give --input, --pet/--ct or --manifest")
    sources = layout.cases(request)
    dicom = any(case.is_dicom for case in sources)
    if not (request.folder_given and dicom):
        for option, value in (("--pet-series", request.pet_series), ("--ct-series", request.ct_series)):
            if value is not None:
                raise InputError(f"{option}: chooses a series of a DICOM --input folder; this input is not one")
    if not dicom:
        for option, value in (("--suv-method", request.suv_method), ("--weight-kg", request.weight_kg)):
            if value is not None:
                raise InputError(f"{option}: applies to DICOM PET only; this input's PET is in SUV already")
    return sources
