#!/usr/bin/env python
"""The grand-challenge algorithm: whole-body FDG PET/CT lesion segmentation.

No arguments: grand-challenge mode, /input/images/{pet,ct}/*.mha to
/output/images/automated-petct-lesion-segmentation/<ct uuid>.mha and /output/results.json.
Local mode takes the same layouts: ``python process.py --input DIR --output DIR [options]``.
evalutils is used here only, so that model/ does not depend on it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import SimpleITK as sitk
from evalutils import SegmentationAlgorithm

from model import InputError, Predictor, segment
from model.files import atomic_write_bytes
from model.geometry import IMAGE_SUFFIXES, image_stem, read_images, write_image_atomic
from model.inference import CaseTimings, lesion_volume_ml

OUTPUT_SLUG = "automated-petct-lesion-segmentation"
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights"


def list_images(folder: Path, role: str) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: {role} folder missing")
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(IMAGE_SUFFIXES))
    if not found:
        raise InputError(f"{folder}: no {role} image (*.mha, *.nii.gz) in this folder")
    return found


def find_cases(input_dir: Path) -> list[tuple[Path, Path]]:
    """(PET, CT) pairs of images/pet and images/ct, paired by sorted file name."""
    pets = list_images(input_dir / "images" / "pet", "PET")
    cts = list_images(input_dir / "images" / "ct", "CT")
    if len(pets) != len(cts):
        raise InputError(f"{input_dir / 'images'}: {len(pets)} PET and {len(cts)} CT images; "
                         "each PET needs one CT (paired by sorted file name)")
    return list(zip(pets, cts, strict=True))


class AutoPETLesionSegmentation(SegmentationAlgorithm):
    """evalutils' algorithm contract (results.json, output folder) around ``model.segment``."""

    def __init__(self, input_dir: Path, output_dir: Path, predictor: Predictor, min_lesion_ml: float = 0.0):
        self.images_out = output_dir / "images" / OUTPUT_SLUG
        super().__init__(input_path=input_dir, output_path=self.images_out,
                         output_file=output_dir / "results.json", validators={})
        self.predictor = predictor
        self.min_lesion_ml = min_lesion_ml
        self.failures = 0

    def process(self) -> None:
        # The pairing of PET and CT is ours (evalutils' loaders read every image twice to hash it).
        self._case_results = [self.process_case(idx=i, case=pair)
                              for i, pair in enumerate(find_cases(self._input_path))]
        self.save()

    def process_case(self, *, idx: int, case: tuple[Path, Path]) -> dict:
        pet_path, ct_path = case
        suffix = ".nii.gz" if ct_path.name.endswith(".nii.gz") else ".mha"
        out_path = self.images_out / f"{image_stem(ct_path)}{suffix}"
        entry = {"inputs": [dict(type="metaio_image", filename=pet_path.name),
                            dict(type="metaio_image", filename=ct_path.name)],
                 "outputs": [], "error_messages": []}
        self.predictor.timings = CaseTimings()
        timings = self.predictor.timings
        try:
            start = time.perf_counter()
            pet, ct = read_images([(pet_path, "PET", sitk.sitkUnknown), (ct_path, "CT", sitk.sitkUnknown)])
            timings.read = time.perf_counter() - start
            mask = self.predict(pet=pet, ct=ct, pet_name=str(pet_path), ct_name=str(ct_path))
            start = time.perf_counter()
            write_image_atomic(mask, out_path)
            timings.write = time.perf_counter() - start
        except InputError as error:
            self.failures += 1
            print(f"error: {error}", file=sys.stderr)
            entry["error_messages"].append(str(error))
            return entry
        entry["outputs"].append(dict(type="metaio_image", filename=out_path.name))
        print(f"{image_stem(ct_path)}: {mask.GetSize()[2]} slices, lesion volume "
              f"{lesion_volume_ml(mask):.2f} ml, {timings.total():.1f} s "
              f"(read {timings.read:.1f}, preprocess {timings.preprocess:.1f}, network {timings.network:.1f}, "
              f"postprocess {timings.postprocess:.1f}, write {timings.write:.1f})", flush=True)
        return entry

    def predict(self, *, pet, ct, pet_name: str = "PET", ct_name: str = "CT"):
        return segment(pet, ct, self.predictor, min_lesion_ml=self.min_lesion_ml, pet_name=pet_name,
                       ct_name=ct_name)

    def save(self) -> None:
        atomic_write_bytes(Path(self._output_file), json.dumps(self._case_results, indent=2).encode())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=Path("/input"), help="folder with images/pet and images/ct")
    parser.add_argument("--output", type=Path, default=Path("/output"), help="output folder")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS,
                        help="a .safetensors checkpoint or a folder of them (an ensemble)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    parser.add_argument("--batch-size", type=int, default=None, help="slices per batch (default 32 GPU, 8 CPU)")
    parser.add_argument("--tta", action="store_true", help="average over flips (4x slower)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the network: slow to start, faster from the second study on")
    parser.add_argument("--min-lesion-ml", type=float, default=0.0, help="drop components smaller than this")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.batch_size is not None and args.batch_size < 1:
            raise InputError(f"--batch-size {args.batch_size}: must be at least 1")
        predictor = Predictor.from_path(args.weights, device=args.device, precision=args.precision,
                                        batch_size=args.batch_size, tta=args.tta, compile_network=args.compile)
        algorithm = AutoPETLesionSegmentation(args.input, args.output, predictor, args.min_lesion_ml)
        algorithm.process()
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 1 if algorithm.failures else 0


if __name__ == "__main__":
    sys.exit(main())
