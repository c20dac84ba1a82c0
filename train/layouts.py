"""The training layouts: how a release or a phantom set is laid out on disk. One table, LAYOUTS: each entry
says how ``train prepare`` finds its studies and how ``train synth`` writes phantoms in it; an entry without
one of them cannot be used for that, and a name not in the table is refused (never read as another layout).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from model.errors import InputError
from model.files import loads_strict, open_regular
from phantoms import StudyWriter, write_grand_challenge, write_tcia
from studies.autopet import AUTOPET_CT, AUTOPET_MASK, AUTOPET_PET
from train.metadata import Diagnoses, patient_key

TRACERS = ("fdg", "psma")
# autoPET III nnU-Net case names: <tracer>_<patient>_<study>, e.g. fdg_0011f3deaf_03-23-2003-NA-PET-CT ...
_NNUNET_CASE = re.compile(r"^(fdg|psma)_([^_]+)_(.+)$", re.IGNORECASE)


@dataclass(frozen=True)
class SourceStudy:
    study_id: str
    patient: str
    tracer: str  # fdg, psma, or unknown
    diagnosis: str
    pet: Path
    ct: Path
    mask: Path


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def find_tcia(source: Path, diagnoses: Diagnoses) -> list[SourceStudy]:
    """<patient>/<study>/{SUV,CTres,SEG}.nii.gz anywhere under ``source`` (the FDG-PET-CT-Lesions NIfTI
    release: FDG studies)."""
    studies = []
    for suv in sorted(source.rglob(AUTOPET_PET)):
        folder = suv.parent
        patient, study = folder.parent.name, folder.name
        studies.append(SourceStudy(study_id=_safe_id(f"{patient}/{study}"), patient=patient, tracer="fdg",
                                   diagnosis=diagnoses.lookup(patient_key(patient), study), pet=suv,
                                   ct=folder / AUTOPET_CT, mask=folder / AUTOPET_MASK))
    return studies


def nnunet_case(case: str) -> tuple[str, str, str]:
    """(patient, tracer, study) of an nnU-Net case name.

    autoPET III: ``fdg_0011f3deaf_<study>`` -> (fdg_0011f3deaf, fdg, <study>); the patient keeps its tracer,
    as the two cohorts are different people. autoPET 2022 style ``PETCT_<patient>_<study>``: FDG. Other
    names: the patient is the name without a trailing ``_<number>``.
    """
    named = _NNUNET_CASE.match(case)
    if named:
        tracer = named[1].lower()
        return f"{tracer}_{named[2]}", tracer, named[3]
    if case.upper().startswith("PETCT_") and case.count("_") >= 2:
        prefix, patient, study = case.split("_", 2)
        return f"{prefix}_{patient}", "fdg", study
    return re.sub(r"_\d+$", "", case), "unknown", case


def find_nnunet(source: Path, diagnoses: Diagnoses) -> list[SourceStudy]:
    """imagesTr/<case>_000k.nii.gz and labelsTr/<case>.nii.gz, channel order from dataset.json."""
    try:
        with open_regular(source / "dataset.json", "nnU-Net dataset description", "r", encoding="utf-8") as handle:
            dataset = loads_strict(handle.read())
    except (OSError, ValueError) as error:
        raise InputError(f"{source / 'dataset.json'}: cannot read the nnU-Net dataset description: {error}") from None
    names = {str(v).upper(): int(k) for k, v in dataset.get("channel_names", dataset.get("modality", {})).items()}
    pet_channel = next((i for n, i in names.items() if "PET" in n or "SUV" in n), None)
    ct_channel = next((i for n, i in names.items() if "CT" in n), None)
    if pet_channel is None or ct_channel is None:
        raise InputError(f"{source / 'dataset.json'}: cannot tell the PET and CT channels from {names}")
    ending = dataset.get("file_ending", ".nii.gz")
    studies = []
    for label in sorted((source / "labelsTr").glob(f"*{ending}")):
        case = label.name[: -len(ending)]
        patient, tracer, study = nnunet_case(case)
        studies.append(SourceStudy(study_id=_safe_id(case), patient=patient, tracer=tracer,
                                   diagnosis=diagnoses.lookup(patient_key(patient), study),
                                   pet=source / "imagesTr" / f"{case}_{pet_channel:04d}{ending}",
                                   ct=source / "imagesTr" / f"{case}_{ct_channel:04d}{ending}", mask=label))
    return studies



StudyFinder = Callable[[Path, Diagnoses], list[SourceStudy]]


@dataclass(frozen=True)
class TrainingLayout:
    name: str
    description: str  # for --help
    find: StudyFinder | None = None  # prepare reads this layout
    write: StudyWriter | None = None  # synth writes phantoms in it


LAYOUTS: dict[str, TrainingLayout] = {layout.name: layout for layout in (
    TrainingLayout("tcia", "Patient/Study/{SUV,CTres,SEG}.nii.gz anywhere under the folder, and Metadata.csv "
                           "(the FDG-PET-CT-Lesions NIfTI release)", find_tcia, write_tcia),
    TrainingLayout("nnunet", "imagesTr, labelsTr and dataset.json (autoPET III: <tracer>_<patient>_<study>)",
                   find_nnunet),
    TrainingLayout("grand-challenge", "images/{pet,ct} and labels as .mha (what process.py reads)",
                   write=write_grand_challenge),
)}


def layouts_for(use: str) -> list[str]:
    """The names of the layouts that can be used for ``use``: "find" (prepare) or "write" (synth)."""
    return [name for name, layout in LAYOUTS.items() if getattr(layout, use) is not None]


def training_layout(name: str, use: str) -> TrainingLayout:
    """The layout called ``name``, checked to support ``use`` ("find" or "write"); InputError otherwise."""
    layout = LAYOUTS.get(name)
    if layout is None or getattr(layout, use) is None:
        what = {"find": "prepare reads", "write": "synth writes"}[use]
        raise InputError(f"layout {name!r}: {what} only {', '.join(layouts_for(use))}")
    return layout


def layouts_help(use: str) -> str:
    """--layout's help: each usable layout and what it looks like."""
    return "; ".join(f"{name}: {LAYOUTS[name].description}" for name in layouts_for(use))
