"""Peak memory of process.py on whole-body studies: RSS of the process (and GPU memory on CUDA).

    python bench/memory.py [--sizes 400x326 512x1000] [--encoder regnety_160] [--device cpu]

Each study is a phantom written as .mha; process.py runs on it in a fresh child process (random weights of
the real architecture), and the child's peak RSS is read from /proc (VmHWM). Prints one line per study.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import ModelConfig, build_network, save_checkpoint
from train.phantom import PhantomSpec, make_phantom

ROOT = Path(__file__).resolve().parents[1]

# Peak RSS is VmHWM of the child's own address space: getrusage's ru_maxrss would carry over the parent's
# resident size at fork, and the parent has just built a large phantom.
CHILD = """
import json, re, sys, time, torch
sys.path.insert(0, {root!r})
import process
start = time.perf_counter()
code = process.main(sys.argv[1:])
gpu = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
print(json.dumps({{"code": code, "seconds": time.perf_counter() - start, "gpu_gib": gpu,
                  "rss_gib": int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 2**20}}))
"""


def write_study(folder: Path, size: int, slices: int) -> None:
    """A phantom of size x size x slices at 2.04 mm in-plane; the slices always span skull to mid-thigh."""
    phantom = make_phantom(5, spec=PhantomSpec(size=size, slices=slices, slice_thickness=978.0 / slices))
    pet, ct, _ = phantom.images()
    del phantom
    for sub, image in (("pet", pet), ("ct", ct)):
        (folder / "images" / sub).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(folder / "images" / sub / f"study_{sub}.mha"), False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["400x326", "512x1000"], help="MATRIXxSLICES")
    parser.add_argument("--encoder", default="regnety_160")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    torch.manual_seed(0)
    config = ModelConfig(encoder=args.encoder)
    weights = save_checkpoint(build_network(config), config, work / "weights" / "model")
    for size_text in args.sizes:
        size, slices = (int(v) for v in size_text.split("x"))
        case = work / size_text
        start = time.perf_counter()
        write_study(case / "input", size, slices)
        made = time.perf_counter() - start
        volume_gib = size * size * slices * 4 / 2**30
        command = [sys.executable, "-c", CHILD.format(root=str(ROOT)), "--input", str(case / "input"),
                   "--output", str(case / "output"), "--weights", str(weights), "--device", args.device,
                   "--no-report"]  # the masks alone, as grand-challenge mode
        if args.batch_size:
            command += ["--batch-size", str(args.batch_size)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            print(result.stderr[-2000:])
            raise SystemExit(f"process.py failed on {size_text}")
        stats = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{size}x{size}x{slices}: peak RSS {stats['rss_gib']:.2f} GiB (one float32 copy of the volume is "
              f"{volume_gib:.2f} GiB), GPU peak {stats['gpu_gib']:.2f} GiB, {stats['seconds']:.1f} s "
              f"(phantom made in {made:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
