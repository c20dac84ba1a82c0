"""Cohort runs over a folder of phantom studies (issue 9): the share of time outside the network with read-ahead
against without, two torchrun ranks against one process, and a run killed after 3 studies then continued with
--skip-existing.

    python -m bench.cohort                                              # 8 studies of 400x400x326, regnety_160
    python -m bench.cohort --size 96 --slices 24 --encoder regnety_002 --peak-size tiny  # smoke, about a minute

Weights are random, the head scaled so that logits are decisive (as in bench/inference.py). First the machine:
CPU, flags, threads and the measured matmul/conv2d peaks (bench/peak.py). The studies are
phantoms' (seeds 0 to N-1, every other one positive) as compressed .mha files in the grand-challenge
layout. Below 400 pixels the grid is coarsened so that a study still spans a whole body (in-plane spacing
2.0364 mm x 400 / size, slices 3 mm x 326 / slices); the model's spacing and crop follow.

1. In this process, one Predictor (after one untimed study): ``runner.run.run`` in grand-challenge mode (masks
   and results.json) with read-ahead off and on, alternating ``--repeats`` times; the best run of each is
   shown (the seconds are the cohort's, as before: from its first read to its last write).
2. ``process.py`` as one process and as ``torchrun --nproc_per_node=2`` (each rank half of the cores): wall
   seconds from start to exit (loading included), masks compared voxel for voxel, results.json entries.
3. ``process.py`` killed (SIGKILL) once 3 masks are in place, then run again with ``--skip-existing``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from bench.api import folder_cases, masks_folder, read_masks, run_folder, segment_images
from bench.peak import SIZES, print_machine
from model import InferenceConfig, ModelConfig, Predictor, build_network, save_checkpoint
from model.arguments import device_name, number
from model.preprocessing import NormalisationConfig
from phantoms import PhantomSpec, make_phantom

ROOT = Path(__file__).resolve().parents[1]
FULL_SIZE, FULL_SLICES, FULL_SPACING, FULL_THICKNESS = 400, 326, 2.0364, 3.0


def make_cohort(folder: Path, studies: int, size: int, slices: int) -> PhantomSpec:
    spec = PhantomSpec(size=size, slices=slices, spacing=FULL_SPACING * FULL_SIZE / size,
                       slice_thickness=FULL_THICKNESS * FULL_SLICES / slices)
    for seed in range(studies):
        pet, ct, _ = make_phantom(seed, positive=seed % 2 == 0, spec=spec).images()
        for image, role, name in ((pet, "pet", f"s{seed:02d}_pet.mha"), (ct, "ct", f"s{seed:02d}.mha")):
            (folder / "images" / role).mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(image, str(folder / "images" / role / name), True)
    return spec


def make_weights(folder: Path, encoder: str, spec: PhantomSpec) -> Path:
    torch.manual_seed(0)
    crop = min(256, 32 * math.ceil(spec.size / 32))
    config = ModelConfig(encoder=encoder, crop_size=crop, spacing_mm=(spec.spacing, spec.spacing),
                         normalisation=NormalisationConfig(scheme="zscore_per_slice"))
    network = build_network(config).eval()
    with torch.no_grad():  # decisive logits: random features, but masks that threads and precision do not move
        network.segmentation_head[0].weight.mul_(20.0)
    return save_checkpoint(network, config, folder / "model")


def masks_of(output: Path) -> dict[str, np.ndarray]:
    return read_masks(output)


def same_masks(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return list(a) == list(b) and all(np.array_equal(a[name], b[name]) for name in a)


def in_process(inputs: Path, work: Path, weights: Path, args: argparse.Namespace) -> None:
    predictor = Predictor.from_path(weights, InferenceConfig(device=args.device, batch_size=args.batch_size))
    first = folder_cases(inputs)[0].load()
    segment_images(first.pet, first.ct, predictor)  # one-time costs (kernels, allocator)
    del first
    runs: dict[bool, list] = {False: [], True: []}
    for repeat in range(args.repeats):
        for read_ahead in (False, True):
            output = work / f"run-{'ahead' if read_ahead else 'plain'}-{repeat}"
            with contextlib.redirect_stdout(io.StringIO()):  # the run's model lines and line per case
                summary = run_folder(inputs, weights, predictor, output, read_ahead=read_ahead)
            runs[read_ahead].append(summary)
            print(f"  read-ahead {'on ' if read_ahead else 'off'}: {summary.wall_s:7.1f} s, network "
                  f"{summary.network_s:7.1f} s, outside the network {100 * summary.outside_network:5.1f} %",
                  flush=True)
    plain, ahead = (min(runs[flag], key=lambda s: s.wall_s) for flag in (False, True))
    identical = same_masks(masks_of(work / "run-plain-0"), masks_of(work / "run-ahead-0"))
    print(f"read-ahead: outside the network {100 * ahead.outside_network:.1f} % ({ahead.wall_s:.1f} s) against "
          f"{100 * plain.outside_network:.1f} % without ({plain.wall_s:.1f} s): {plain.wall_s / ahead.wall_s:.2f}x; "
          f"masks identical: {'yes' if identical else 'NO'}", flush=True)


def process_command(inputs: Path, output: Path, weights: Path, args: argparse.Namespace, *extra: str) -> list[str]:
    command = [str(ROOT / "process.py"), "--input", str(inputs), "--output", str(output), "--weights", str(weights),
               "--device", args.device, "--no-report", *extra]
    if args.batch_size:
        command += ["--batch-size", str(args.batch_size)]
    return command


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command[:4])}...: exit {result.returncode}\n{result.stderr[-2000:]}")
    return time.perf_counter() - start


def ranks(inputs: Path, work: Path, weights: Path, args: argparse.Namespace) -> None:
    one_s = timed([sys.executable, *process_command(inputs, work / "one-rank", weights, args)])
    two_s = timed([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   *process_command(inputs, work / "two-ranks", weights, args)])
    identical = same_masks(masks_of(work / "one-rank"), masks_of(work / "two-ranks"))
    entries = json.loads((work / "two-ranks" / "results.json").read_text())
    written = sum(not entry["error_messages"] for entry in entries)
    print(f"ranks: 1 process {one_s:.1f} s, 2 torchrun ranks {two_s:.1f} s ({one_s / two_s:.2f}x); masks "
          f"identical: {'yes' if identical else 'NO'}; one results.json with {written} of {args.studies} studies",
          flush=True)


def kill_and_continue(inputs: Path, work: Path, weights: Path, args: argparse.Namespace) -> None:
    output = work / "killed"
    masks = masks_folder(output)
    run = subprocess.Popen([sys.executable, *process_command(inputs, output, weights, args)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while run.poll() is None and len(list(masks.glob("[!.]*"))) < 3:
        time.sleep(0.02)
    if run.poll() is None:
        os.kill(run.pid, signal.SIGKILL)
    run.wait()
    before = {p.name: p.stat().st_mtime_ns for p in masks.glob("[!.]*")}
    leftovers = len(list(output.rglob(".*")))
    start = time.perf_counter()
    again = subprocess.run([sys.executable, *process_command(inputs, output, weights, args, "--skip-existing")],
                           capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    after = {p.name: p.stat().st_mtime_ns for p in masks.glob("[!.]*")}
    redone = sum(after.get(name) != stamp for name, stamp in before.items())
    entries = json.loads((output / "results.json").read_text()) if (output / "results.json").is_file() else []
    complete = same_masks(masks_of(output), masks_of(work / "one-rank"))
    print(f"kill: SIGKILL with {len(before)} masks written ({leftovers} temporary files left); the --skip-existing "
          f"run (exit {again.returncode}) redid {redone} of them and wrote {len(after) - len(before)} in "
          f"{seconds:.1f} s; masks equal to an uninterrupted run's: {'yes' if complete else 'NO'}; results.json "
          f"{len(entries)} entries; hidden files left: {len(list(output.rglob('.*')))}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=number(int, 1, 10_000), default=8)
    parser.add_argument("--size", type=number(int, 16, 4096), default=FULL_SIZE, help="pixels per row and column")
    parser.add_argument("--slices", type=number(int, 1, 4096), default=FULL_SLICES)
    parser.add_argument("--encoder", default="regnety_160")
    parser.add_argument("--batch-size", type=number(int, 1, 1024), default=None)
    parser.add_argument("--device", type=device_name, default="cpu")
    parser.add_argument("--repeats", type=number(int, 1, 1000), default=1,
                        help="alternating in-process runs of each way")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (printed)")
    parser.add_argument("--peak-size", choices=list(SIZES), default="full",
                        help="sizes of the matmul and conv2d that measure the peaks (tiny: a smoke run)")
    args = parser.parse_args()
    if args.studies < 4:
        parser.error("--studies: at least 4 (the kill comes after 3)")

    work = Path(tempfile.mkdtemp(prefix="bench-cohort-"))
    try:
        spec = make_cohort(work / "input", args.studies, args.size, args.slices)
        weights = make_weights(work / "weights", args.encoder, spec)
        print_machine(args.device, sizes=args.peak_size)
        print(f"{args.studies} studies of {args.size}x{args.size}x{args.slices} ({spec.spacing:.2f} mm, "
              f"{spec.slice_thickness:.2f} mm slices); encoder {args.encoder}; device {args.device}", flush=True)
        in_process(work / "input", work, weights, args)
        ranks(work / "input", work, weights, args)
        kill_and_continue(work / "input", work, weights, args)
    finally:
        if args.keep:
            print(f"work folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
