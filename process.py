#!/usr/bin/env python
"""The grand-challenge algorithm: whole-body FDG PET/CT lesion segmentation.

No arguments: grand-challenge mode, /input/images/{pet,ct}/*.mha to
/output/images/automated-petct-lesion-segmentation/<ct uuid>.mha and /output/results.json.
Local mode takes the same layouts: ``python process.py --input DIR --output DIR [options]``.
Exit codes: 0 every case written; 1 some case failed (the others are written); 2 nothing could start
(arguments, folders, weights); 130 interrupted. Every problem is one line on stderr.
evalutils is used here only, so that model/ does not depend on it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk
import torch
from evalutils import SegmentationAlgorithm

from model import CaseResult, CaseTimings, InferenceConfig, InputError, Predictor, run_images, segment
from model.checks import check_study
from model.errors import WriteError, describe, one_line, shown
from model.files import atomic_write_bytes
from model.inference import resolve_device
from model.readers import IMAGE_SUFFIXES, image_stem, is_image_name, read_images, require_utf8_path

OUTPUT_SLUG = "automated-petct-lesion-segmentation"
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights"
DEVICE_NAME = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
EXIT_CASE_FAILED, EXIT_NOT_STARTED, EXIT_INTERRUPTED = 1, 2, 130


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


def output_suffix(ct_path: Path) -> str:
    """The mask's format follows the CT's: NIfTI in (.nii or .nii.gz), compressed NIfTI out; else MetaImage."""
    return ".nii.gz" if ct_path.name.endswith((".nii.gz", ".nii")) else ".mha"


def find_cases(input_dir: Path) -> list[tuple[Path, Path]]:
    """(PET, CT) pairs of images/pet and images/ct, paired by sorted file name. Two CTs with one case name
    (``x.mha`` and ``x.nii``) would write one mask: refused."""
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
    return list(zip(pets, cts, strict=True))


def prepare_output(output_dir: Path) -> Path:
    """Make sure results can be written before any work is done: the output folder and its image folder
    are folders (or can be made) and take a file. Returns the image folder."""
    images_out = output_dir / "images" / OUTPUT_SLUG
    require_utf8_path(output_dir, "output folder")
    for folder in (output_dir, output_dir / "images", images_out):
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{shown(folder)}: output folder is a file")
    if (output_dir / "results.json").is_dir():
        raise InputError(f"{shown(output_dir / 'results.json')}: is a folder")
    try:
        images_out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{shown(images_out)}: output folder cannot be made ({error.strerror})") from None
    for folder in (output_dir, images_out):
        try:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
            os.close(fd)
            os.unlink(probe)
        except OSError as error:
            raise InputError(f"{shown(folder)}: output folder not writable ({error.strerror})") from None
    return images_out


def check_device(device: str) -> None:
    if not DEVICE_NAME.fullmatch(device):
        raise InputError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    resolved = resolve_device(device)
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise InputError(f"--device {device}: PyTorch sees {torch.cuda.device_count()} CUDA GPU(s)")


def _json_name(path: Path) -> str:
    """A file name for results.json: itself, unless it is not UTF-8 (then its escaped form)."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        return shown(path.name)
    return path.name


class AutoPETLesionSegmentation(SegmentationAlgorithm):
    """evalutils' algorithm contract (results.json, output folder) around ``model.segment``."""

    def __init__(self, input_dir: Path, output_dir: Path, predictor: Predictor,
                 cases: list[tuple[Path, Path]] | None = None):
        self.images_out = output_dir / "images" / OUTPUT_SLUG
        super().__init__(input_path=input_dir, output_path=self.images_out,
                         output_file=output_dir / "results.json", validators={})
        self.predictor = predictor
        self.cases = cases
        self.failures = 0

    def process(self) -> None:
        # The pairing of PET and CT is ours (evalutils' loaders read every image twice to hash it).
        cases = self.cases if self.cases is not None else find_cases(self._input_path)
        self._case_results = [self.process_case(idx=i, case=pair) for i, pair in enumerate(cases)]
        self.save()

    def process_case(self, *, idx: int, case: tuple[Path, Path]) -> dict:
        """One case; any failure of it (bad input, a failed write, no memory) is its one line and its
        results.json entry, and leaves no mask of it, not even one from an earlier run."""
        pet_path, ct_path = case
        out_path = self.images_out / f"{image_stem(ct_path)}{output_suffix(ct_path)}"
        entry = {"inputs": [dict(type="metaio_image", filename=_json_name(pet_path)),
                            dict(type="metaio_image", filename=_json_name(ct_path))],
                 "outputs": [], "error_messages": []}
        try:
            result = self.segment_case(pet_path, ct_path, out_path)
        except Exception as error:  # every failure of one case is its line; the other cases go on
            message = str(error) if isinstance(error, (InputError, WriteError)) else \
                f"{shown(ct_path)}: case failed ({describe(error)})"
            try:
                out_path.unlink(missing_ok=True)
            except OSError as stale:
                message += f"; its mask from an earlier run could not be removed ({stale.strerror})"
            self.failures += 1
            print(f"error: {one_line(message)}", file=sys.stderr, flush=True)
            entry["error_messages"].append(one_line(message))
            return entry
        entry["outputs"].append(dict(type="metaio_image", filename=out_path.name))
        timings = result.timings
        print(f"{shown(image_stem(ct_path))}: {result.mask.GetSize()[2]} slices, lesion volume "
              f"{result.lesion_volume_ml:.2f} ml, {timings.total():.1f} s "
              f"(read {timings.read:.1f}, preprocess {timings.preprocess:.1f}, network {timings.network:.1f}, "
              f"postprocess {timings.postprocess:.1f}, write {timings.write:.1f})", flush=True)
        return entry

    def segment_case(self, pet_path: Path, ct_path: Path, out_path: Path) -> CaseResult:
        """Read, check that the pair is plausible (model/checks.py), segment and write."""
        timings = CaseTimings()
        start = time.perf_counter()
        pet, ct = read_images([(pet_path, "PET", sitk.sitkUnknown), (ct_path, "CT", sitk.sitkUnknown)])
        timings.read = time.perf_counter() - start
        start = time.perf_counter()
        check_study(pet, ct, pet_name=str(pet_path), ct_name=str(ct_path))
        timings.preprocess = time.perf_counter() - start
        return run_images(pet, ct, out_path, self.predictor, timings=timings, pet_name=str(pet_path),
                          ct_name=str(ct_path))

    def predict(self, *, pet, ct, pet_name: str = "PET", ct_name: str = "CT"):
        return segment(pet, ct, self.predictor, pet_name=pet_name, ct_name=ct_name)

    def save(self) -> None:
        atomic_write_bytes(Path(self._output_file), json.dumps(self._case_results, indent=2).encode())


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage and message (two lines) and exits itself
        raise InputError(f"{message} (see --help)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    try:
        args = parse_args(argv)
        # Everything that can stop the run is checked before the weights load and any case runs.
        check_device(args.device)
        if not math.isfinite(args.min_lesion_ml):
            raise InputError(f"--min-lesion-ml {args.min_lesion_ml}: must be a finite number of ml")
        settings = InferenceConfig(device=args.device, precision=args.precision, batch_size=args.batch_size,
                                   tta=args.tta, compile=args.compile, min_lesion_ml=args.min_lesion_ml)
        cases = find_cases(args.input)
        prepare_output(args.output)
        predictor = Predictor.from_path(args.weights, settings)
        algorithm = AutoPETLesionSegmentation(args.input, args.output, predictor, cases)
    except (InputError, OSError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return EXIT_NOT_STARTED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    try:
        algorithm.process()
    except KeyboardInterrupt:
        # Temporary files are removed on the way out; masks already renamed into place are complete.
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except WriteError as error:  # results.json
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CASE_FAILED
    return EXIT_CASE_FAILED if algorithm.failures else 0


if __name__ == "__main__":
    sys.exit(main())
