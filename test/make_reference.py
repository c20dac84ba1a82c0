"""Writes the reference that test/check_output.py compares against: the fp32 lesion probability of every
case of INPUT (EXPECTED/probability/<ct name>.mha) and EXPECTED/reference.json (threshold, margin, weights).

    python test/make_reference.py INPUT EXPECTED WEIGHTS

EXPECTED must already hold the fp32 masks that process.py wrote (--precision fp32); they are checked to be
exactly this probability thresholded, so mask and probability cannot drift apart.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from model import Predictor
from model.checkpoint import find_checkpoints
from model.files import atomic_write_bytes
from model.inference import lesion_mask, lesion_probability
from studies.readers import read_image, write_image_atomic

# fp16 and bf16 moved probabilities by at most 0.0133 from fp32 on the shipped case and four phantoms
# (README, "Precision"); the margin leaves almost four times that.
MARGIN = 0.05
# Probabilities below this are stored as 0, so that the file compresses (7 MB to 66 kB on the shipped case):
# they lie far outside any margin around the threshold.
FLOOR = 0.01
SLUG = "images/automated-petct-lesion-segmentation"


def main(input_dir: Path, expected: Path, weights: Path) -> None:
    predictor = Predictor.from_path(weights, device="cpu", precision="fp32")
    pets = sorted((input_dir / "images/pet").glob("*.mha"))
    cts = sorted((input_dir / "images/ct").glob("*.mha"))
    (expected / "probability").mkdir(parents=True, exist_ok=True)
    for pet_path, ct_path in zip(pets, cts, strict=True):
        pet, ct = read_image(pet_path, "PET", sitk.sitkFloat32), read_image(ct_path, "CT", sitk.sitkFloat32)
        probability = lesion_probability(pet, ct, predictor)
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(expected / SLUG / ct_path.name)))
        if not np.array_equal(lesion_mask(sitk.GetArrayViewFromImage(probability), predictor.config.threshold),
                              mask):
            sys.exit(f"{expected / SLUG / ct_path.name}: not the fp32 mask of these weights (run process.py "
                     f"--precision fp32 first)")
        values = sitk.GetArrayFromImage(probability)
        values[values < FLOOR] = 0.0
        stored = sitk.GetImageFromArray(values)
        stored.CopyInformation(probability)
        write_image_atomic(stored, expected / "probability" / ct_path.name)
    reference = {"threshold": predictor.config.threshold, "margin": MARGIN, "floor": FLOOR, "precision": "fp32",
                 "weights": [path.name for path in find_checkpoints(weights)]}
    atomic_write_bytes(expected / "reference.json", (json.dumps(reference, indent=2) + "\n").encode())


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*(Path(a) for a in sys.argv[1:4]))
