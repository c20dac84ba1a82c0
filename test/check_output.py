"""Checks an algorithm output folder against the expected one: present, PET geometry, uint8 0/1, and the mask
itself, on any precision.

    python test/check_output.py OUTPUT EXPECTED INPUT

EXPECTED holds the fp32 masks (images/automated-petct-lesion-segmentation/) and, in probability/, the fp32
lesion probability each mask was thresholded from, with reference.json (threshold, margin). fp16 and bf16
move probabilities by up to about 0.013 (measured on the shipped case and phantoms: README), so a voxel the
reference puts within ``margin`` of the threshold may land either side; every other voxel must agree
exactly. A mask moved by a voxel, an empty mask or another model's mask disagrees on confident voxels.
Exit 0 when every case passes; one line per problem else.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path.cwd()))  # model/ is in the working directory: the repository or the image's /opt/app
from model.metrics import dice

SLUG = "images/automated-petct-lesion-segmentation"
REFERENCE = "reference.json"


def compare_mask(mask: np.ndarray, probability: np.ndarray, threshold: float, margin: float) -> tuple[int, int]:
    """(voxels that disagree with the reference where it is confident, voxels within the margin)."""
    confident = np.abs(probability - threshold) > margin
    expected = probability >= threshold
    return int(((mask != expected) & confident).sum()), int((~confident).sum())


def check_case(name: str, pet_path: Path, out_path: Path, expected: Path, reference: dict) -> list[str]:
    problems = []
    pet, mask = sitk.ReadImage(str(pet_path)), sitk.ReadImage(str(out_path))
    if (mask.GetSize(), mask.GetSpacing(), mask.GetOrigin(), mask.GetDirection()) != (
            pet.GetSize(), pet.GetSpacing(), pet.GetOrigin(), pet.GetDirection()):
        return [f"{out_path}: geometry differs from the PET {pet_path.name}"]
    if mask.GetPixelID() != sitk.sitkUInt8:
        problems.append(f"{out_path}: pixel type {mask.GetPixelIDTypeAsString()}, expected uint8")
    a = sitk.GetArrayFromImage(mask)
    if not set(np.unique(a).tolist()) <= {0, 1}:
        problems.append(f"{out_path}: values {np.unique(a)[:5].tolist()} are not 0/1")
    a = a.astype(bool)
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(expected / SLUG / name))).astype(bool)
    probability = sitk.GetArrayFromImage(sitk.ReadImage(str(expected / "probability" / name)))
    threshold, margin = reference["threshold"], reference["margin"]
    wrong, uncertain = compare_mask(a, probability, threshold, margin)
    print(f"{name}: {a.sum()} lesion voxels, expected {b.sum()} (fp32), Dice {dice(a, b):.4f}; "
          f"{uncertain} voxels within {margin} of the threshold {threshold} may differ, "
          f"{int((a != b)[np.abs(probability - threshold) <= margin].sum())} do; {wrong} others differ")
    if wrong:
        problems.append(f"{out_path}: {wrong} voxels differ from the expected mask where its probability is "
                        f"further than {margin} from the threshold (a wrong mask, not rounding)")
    return problems


def main(output: Path, expected: Path, input_dir: Path) -> list[str]:
    problems = []
    reference = json.loads((expected / REFERENCE).read_text())
    pets = sorted((input_dir / "images/pet").glob("*.mha"))
    cts = sorted((input_dir / "images/ct").glob("*.mha"))
    expected_masks = sorted((expected / SLUG).glob("*.mha"))
    written = sorted((output / SLUG).iterdir()) if (output / SLUG).is_dir() else []
    if [p.name for p in written] != [p.name for p in expected_masks]:
        problems.append(f"{output / SLUG}: holds {[p.name for p in written]}, expected "
                        f"{[p.name for p in expected_masks]}")
    if not (output / "results.json").is_file():
        problems.append(f"{output / 'results.json'}: missing")
    else:
        json.loads((output / "results.json").read_text())
    for pet_path, ct_path in zip(pets, cts, strict=True):
        out_path = output / SLUG / ct_path.name
        if not out_path.is_file():
            problems.append(f"{out_path}: missing")
            continue
        problems += check_case(ct_path.name, pet_path, out_path, expected, reference)
    return problems


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    found = main(*(Path(a) for a in sys.argv[1:4]))
    for line in found:
        print(f"FAIL {line}")
    print("output check passed" if not found else f"output check failed: {len(found)} problem(s)")
    sys.exit(1 if found else 0)
