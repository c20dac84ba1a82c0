"""Writing phantoms to disk: write_dataset draws the studies and hands each to a layout's writer, which puts
its three images where that layout keeps them. train.layouts names the writers (``python -m train synth
--layout``); a new layout is one more writer here and one more row there."""

from __future__ import annotations

import csv
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from phantoms.preview import coronal_mip, write_preview
from phantoms.study import DEFAULT_SPEC, PhantomSpec, make_phantom
from studies.autopet import AUTOPET_CT, AUTOPET_MASK, AUTOPET_PET


@dataclass(frozen=True)
class StudyName:
    """What a writer names a study by: its place in the set, its patient and its study UID."""

    index: int
    patient: str
    study: str


# A study's images: PET, CT, mask, and the tissue labels (Phantom.tissue_image) or None where not asked for.
StudyImages = tuple[sitk.Image, sitk.Image, sitk.Image, sitk.Image | None]
# A layout's writer: (root folder, the study's names, its images) -> the location Metadata.csv records.
StudyWriter = Callable[[Path, StudyName, StudyImages], str]


def _write(image: sitk.Image, path: Path) -> None:
    sitk.WriteImage(image, str(path), useCompression=True)


def write_tcia(out: Path, name: StudyName, images: StudyImages) -> str:
    """The FDG-PET-CT-Lesions NIfTI release: <patient>/<study>/{SUV,CTres,SEG}.nii.gz (what prepare reads), and
    TISSUES.nii.gz where the tissue labels are given (not a release file)."""
    folder = out / name.patient / name.study
    folder.mkdir(parents=True, exist_ok=True)
    for image, file in zip(images, (AUTOPET_PET, AUTOPET_CT, AUTOPET_MASK, "TISSUES.nii.gz"), strict=True):
        if image is not None:
            _write(image, folder / file)
    return f"./{name.patient}/{name.study}"


def write_grand_challenge(out: Path, name: StudyName, images: StudyImages) -> str:
    """grand-challenge's: images/pet, images/ct and labels as .mha (what process.py reads); the tissue labels,
    where given, in tissues/ under the label's name (``train evaluate --tissues``)."""
    stem = f"{name.index:04d}_{name.patient}"
    pet, ct, mask, tissues = images
    for sub in ("images/pet", "images/ct", "labels", *(("tissues",) if tissues is not None else ())):
        (out / sub).mkdir(parents=True, exist_ok=True)
    _write(pet, out / "images/pet" / f"{stem}_pet-{name.study[:8]}.mha")
    _write(ct, out / "images/ct" / f"{stem}.mha")
    _write(mask, out / "labels" / f"{stem}.mha")
    if tissues is not None:
        _write(tissues, out / "tissues" / f"{stem}.mha")
    return stem


def _study_uid(rng_seed: int, index: int) -> str:
    return str(uuid.UUID(int=(rng_seed * 1_000_003 + index) % (1 << 128) | (1 << 127)))


def write_dataset(out: Path, cases: int, seed: int, writer: StudyWriter = write_tcia,
                  spec: PhantomSpec = DEFAULT_SPEC, negative_fraction: float = 0.5, progress: bool | None = None,
                  preview: Path | None = None, tissues: bool = False) -> list[dict]:
    """Write ``cases`` phantoms with ``writer`` (default the TCIA NIfTI layout) and OUT/Metadata.csv.

    ``preview``: also write a PNG of coronal PET MIPs of the first eight studies, lesions outlined.
    ``tissues``: also write each study's tissue labels (Phantom.tissue_image) where the layout keeps them.
    """
    from tqdm.auto import tqdm

    if not 0 <= negative_fraction <= 1:
        raise ValueError(f"negative_fraction {negative_fraction} is not a fraction")
    out = Path(out)
    rng = np.random.default_rng(seed)
    rows = []
    mips = []
    patient = 0
    for index in tqdm(range(cases), desc="phantoms", unit="case", disable=None if progress is None else not progress):
        positive = rng.random() >= negative_fraction
        case_seed = int(rng.integers(1 << 31))
        phantom = make_phantom(case_seed, positive=positive, spec=spec)
        # Some patients have a second study, as in the real data (1014 studies of 900 patients).
        if index > 0 and rng.random() < 0.12:
            patient -= 1
        name = StudyName(index, f"PETCT_{seed:03d}{patient:04d}", _study_uid(seed, index))
        patient += 1
        location = writer(out, name, (*phantom.images(), phantom.tissue_image() if tissues else None))
        rows.append({"Subject ID": name.patient, "Study UID": name.study, "diagnosis": phantom.diagnosis,
                     "age": phantom.features["age"], "sex": phantom.features["sex"], "File Location": location})
        if preview is not None and len(mips) < 8:
            mips.append(coronal_mip(phantom))
        del phantom
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "Metadata.csv", "w", newline="") as handle:
        table = csv.DictWriter(handle, fieldnames=list(rows[0]))
        table.writeheader()
        table.writerows(rows)
    if preview is not None:
        write_preview(Path(preview), mips)
    return rows
