"""Checks an algorithm output folder against the expected one: present, PET geometry, uint8 0/1, Dice.

    python test/check_output.py OUTPUT EXPECTED INPUT
Exit 0 when every expected mask is matched with Dice >= 0.99 (or both empty); one line per problem else.
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


def main(output: Path, expected: Path, input_dir: Path) -> list[str]:
    problems = []
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
        name = ct_path.name
        out_path, exp_path = output / SLUG / name, expected / SLUG / name
        if not out_path.is_file():
            problems.append(f"{out_path}: missing")
            continue
        pet, mask, ref = (sitk.ReadImage(str(p)) for p in (pet_path, out_path, exp_path))
        if (mask.GetSize(), mask.GetSpacing(), mask.GetOrigin(), mask.GetDirection()) != (
                pet.GetSize(), pet.GetSpacing(), pet.GetOrigin(), pet.GetDirection()):
            problems.append(f"{out_path}: geometry differs from the PET {pet_path.name}")
        if mask.GetPixelID() != sitk.sitkUInt8:
            problems.append(f"{out_path}: pixel type {mask.GetPixelIDTypeAsString()}, expected uint8")
        a, b = sitk.GetArrayFromImage(mask), sitk.GetArrayFromImage(ref).astype(bool)
        if not set(np.unique(a).tolist()) <= {0, 1}:
            problems.append(f"{out_path}: values {np.unique(a)[:5].tolist()} are not 0/1")
        a = a.astype(bool)
        agreement = dice(a, b)
        print(f"{name}: {a.sum()} lesion voxels, expected {b.sum()}, Dice {agreement:.4f}")
        if agreement < 0.99:
            problems.append(f"{out_path}: Dice {agreement:.4f} against the expected mask is below 0.99")
    return problems


if __name__ == "__main__":
    found = main(*(Path(a) for a in sys.argv[1:4]))
    for line in found:
        print(f"FAIL {line}")
    print("output check passed" if not found else f"output check failed: {len(found)} problem(s)")
    sys.exit(1 if found else 0)
