"""Peak memory of a cohort run on whole-body studies: RSS of the process (and GPU memory on CUDA).

    python -m bench.memory [--sizes 400x326 512x1000] [--encoder regnety_160] [--device cpu]
    python -m bench.memory --sizes 96x24 --encoder regnety_002 --peak-size tiny   # a smoke run

Each study is a phantom written as .mha; a fresh child process (``python -m bench.memory --child``) loads
random weights of the real architecture and segments it the way process.py's grand-challenge mode does
(bench.api.run_folder: runner.run.run, masks and results.json, read-ahead on), and the child's peak RSS is read
from /proc (VmHWM). First the machine (CPU, flags, threads, measured peaks: bench/peak.py), then one line per
study.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk
import torch

from bench.api import run_folder
from bench.peak import SIZES, print_machine
from model import InferenceConfig, ModelConfig, Predictor, build_network, save_checkpoint
from model.arguments import device_name, number
from phantoms import PhantomSpec, make_phantom

ROOT = Path(__file__).resolve().parents[1]


def write_study(folder: Path, size: int, slices: int) -> None:
    """A phantom of size x size x slices at 2.04 mm in-plane; the slices always span skull to mid-thigh."""
    phantom = make_phantom(5, spec=PhantomSpec(size=size, slices=slices, slice_thickness=978.0 / slices))
    pet, ct, _ = phantom.images()
    del phantom
    for sub, image in (("pet", pet), ("ct", ct)):
        (folder / "images" / sub).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(folder / "images" / sub / f"study_{sub}.mha"), False)


def child(inputs: Path, output: Path, weights: Path, device: str, batch_size: int | None) -> None:
    """In the fresh process: load, segment the folder, print one JSON line with the peaks. Peak RSS is VmHWM
    of this process's own address space: getrusage's ru_maxrss would carry over the parent's resident size at
    fork, and the parent has just built a large phantom."""
    start = time.perf_counter()
    predictor = Predictor.from_path(weights, InferenceConfig(device=device, batch_size=batch_size))
    summary = run_folder(inputs, weights, predictor, output)
    gpu = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    rss = int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 2**20
    print(json.dumps({"failed": summary.count("failed"), "seconds": time.perf_counter() - start, "gpu_gib": gpu,
                      "rss_gib": rss}))


def measure(size_text: str, work: Path, weights: Path, args: argparse.Namespace) -> None:
    size, slices = (int(v) for v in size_text.split("x"))
    case = work / size_text
    start = time.perf_counter()
    write_study(case / "input", size, slices)
    made = time.perf_counter() - start
    volume_gib = size * size * slices * 4 / 2**30
    command = [sys.executable, "-m", "bench.memory", "--child", str(case / "input"), str(case / "output"),
               str(weights), "--device", args.device]
    if args.batch_size:
        command += ["--batch-size", str(args.batch_size)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        print(result.stderr[-2000:])
        raise SystemExit(f"the cohort run failed on {size_text}")
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"{size}x{size}x{slices}: peak RSS {stats['rss_gib']:.2f} GiB (one float32 copy of the volume is "
          f"{volume_gib:.2f} GiB), GPU peak {stats['gpu_gib']:.2f} GiB, {stats['seconds']:.1f} s, "
          f"{stats['failed']} failed (phantom made in {made:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["400x326", "512x1000"], help="MATRIXxSLICES")
    parser.add_argument("--encoder", default="regnety_160")
    parser.add_argument("--device", type=device_name, default="cpu")
    parser.add_argument("--batch-size", type=number(int, 1, 1024), default=None)
    parser.add_argument("--peak-size", choices=list(SIZES), default="full",
                        help="sizes of the matmul and conv2d that measure the peaks (tiny: a smoke run)")
    parser.add_argument("--child", nargs=3, metavar=("INPUT", "OUTPUT", "WEIGHTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*(Path(p) for p in args.child), args.device, args.batch_size)
        return
    print_machine(args.device, sizes=args.peak_size)
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    torch.manual_seed(0)
    config = ModelConfig(encoder=args.encoder)
    weights = save_checkpoint(build_network(config), config, work / "weights" / "model")
    for size_text in args.sizes:
        measure(size_text, work, weights, args)


if __name__ == "__main__":
    main()
