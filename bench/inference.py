"""End-to-end inference on a whole-body phantom: this project's way against a re-creation of the seed code's.

    python bench/inference.py [--size 400 --slices 326] [--repeats 1] [--encoder regnety_160] [--body-windows]

Both ways use the same random weights (the head scaled so that logits are decisive and the two masks can be
compared), the same input files and the same machine, in alternating runs. The seed's way: read with
SimpleITK, then per slice: numpy z-score over the body, a 256x256 crop centred on the body, batch 1, fp32,
no channels_last, paste back, write. The project's way is ``model.run_case`` (read, segment, write). Prints the
CPU (model name and the vector/matrix extensions /proc/cpuinfo reports), seconds per case, slices per second,
the ratio, the split of the project's time, the network's FLOPs per slice and the share of the CPU's peak.
Last line: ``speedup <ratio> mask_dice <dice>``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import InferenceConfig, ModelConfig, Predictor, build_network, run_case, save_checkpoint
from model.config import NormalisationConfig
from model.inference import CaseTimings
from model.metrics import dice
from train.phantom import PhantomSpec, make_phantom


def seed_way(network: torch.nn.Module, pet_path: Path, ct_path: Path, out_path: Path) -> float:
    """The seed code's inference, re-created: one slice at a time, batch 1, fp32."""
    start = time.perf_counter()
    pet_img = sitk.ReadImage(str(pet_path))
    pet = sitk.GetArrayFromImage(pet_img).astype(np.float32)
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(ct_path))).astype(np.float32)
    mask = np.zeros(pet.shape, np.uint8)
    crop = 256
    with torch.no_grad():
        for z in range(pet.shape[0]):
            ct_s = np.clip(ct[z], -1000, 1000)
            body = ct_s > -500
            pet_s = pet[z]
            channels = []
            for channel in (pet_s, ct_s):
                values = channel[body] if body.any() else channel.ravel()
                channels.append((channel - values.mean()) / max(values.std(), 1e-6))
            rows, cols = np.flatnonzero(body.any(1)), np.flatnonzero(body.any(0))
            cy = (rows[0] + rows[-1] + 1) // 2 if rows.size else pet.shape[1] // 2
            cx = (cols[0] + cols[-1] + 1) // 2 if cols.size else pet.shape[2] // 2
            y0 = min(max(cy - crop // 2, 0), pet.shape[1] - crop)
            x0 = min(max(cx - crop // 2, 0), pet.shape[2] - crop)
            x = torch.from_numpy(np.stack(channels)[None, :, y0 : y0 + crop, x0 : x0 + crop].copy())
            prob = torch.sigmoid(network(x))[0, 0].numpy()
            mask[z, y0 : y0 + crop, x0 : x0 + crop] = prob > 0.5
    image = sitk.GetImageFromArray(mask)
    image.CopyInformation(pet_img)
    sitk.WriteImage(image, str(out_path), True)
    return time.perf_counter() - start


def project_way(predictor: Predictor, pet_path: Path, ct_path: Path, out_path: Path) -> CaseTimings:
    return run_case(pet_path, ct_path, out_path, predictor, progress=False).timings


def cpu_flags() -> set[str]:
    match = re.search(r"flags\s*:(.*)", Path("/proc/cpuinfo").read_text())
    return set(match.group(1).split()) if match else set()


def cpu_label() -> str:
    """The CPU's model name and which of AVX2, AVX-512, AMX and native bf16 /proc/cpuinfo reports."""
    info = Path("/proc/cpuinfo").read_text()
    match = re.search(r"model name\s*:\s*(.*)", info)
    flags = cpu_flags()
    found = {"AVX2": "avx2" in flags, "AVX-512": "avx512f" in flags, "AMX": "amx_tile" in flags,
             "bf16": bool({"avx512_bf16", "amx_bf16"} & flags)}
    listed = ", ".join(f"{name} {'yes' if present else 'no'}" for name, present in found.items())
    return f"{match.group(1).strip() if match else 'unknown CPU'} ({os.cpu_count()} threads; {listed})"


def flops_per_slice(network: torch.nn.Module, crop: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        network(torch.zeros(1, 2, crop, crop))
    return counter.get_total_flops()


def cpu_peak_flops(dtype: torch.dtype) -> tuple[float, str]:
    """Peak FLOP/s of this machine's cores for a dtype, and how it was derived."""
    info = Path("/proc/cpuinfo").read_text()
    mhz = max(float(m) for m in re.findall(r"cpu MHz\s*:\s*([\d.]+)", info))
    cores = os.cpu_count() or 1
    flags = cpu_flags()
    if dtype == torch.bfloat16 and "amx_bf16" in flags:
        per_cycle, how = 1024, "AMX: 1024 bf16 FLOP/cycle/core"
    elif "avx512f" in flags:
        per_cycle, how = 64 * (2 if dtype == torch.bfloat16 and "avx512_bf16" in flags else 1), \
            "AVX-512: 2 FMA units x 16 fp32 lanes x 2 FLOP"
    else:
        per_cycle, how = 32, "AVX2: 2 FMA units x 8 fp32 lanes x 2 FLOP"
    peak = per_cycle * mhz * 1e6 * cores
    return peak, f"{how} x {mhz:.0f} MHz x {cores} cores = {peak / 1e12:.2f} TFLOP/s"


def print_profile(predictor: Predictor, crop: int, rows: int = 8) -> None:
    """Where one batch of the project's network time goes, by operator (torch.profiler, self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    tiles = torch.randn(predictor.batch_size, 2, crop, crop)
    predictor.predict_tiles(tiles)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        predictor.predict_tiles(tiles)
    print(f"profile of one batch of {predictor.batch_size} (top {rows} operators by self CPU time):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=400)
    parser.add_argument("--slices", type=int, default=326)
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each way")
    parser.add_argument("--encoder", default="regnety_160")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the project's network (the first run then includes compiling)")
    parser.add_argument("--body-windows", action="store_true",
                        help="windows shrunk to the body's box (fewer FLOPs; see bench/flops.py)")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = ModelConfig(encoder=args.encoder, normalisation=NormalisationConfig(scheme="zscore_per_slice"))
    network = build_network(config).eval()
    with torch.no_grad():  # decisive logits: random features, but a mask that precision barely moves
        network.segmentation_head[0].weight.mul_(20.0)
    work = Path(tempfile.mkdtemp(prefix="bench-inference-"))
    weights = save_checkpoint(network, config, work / "weights" / "model")
    phantom = make_phantom(1, spec=PhantomSpec(size=args.size, slices=args.slices))
    pet, ct, _ = phantom.images()
    pet_path, ct_path = work / "pet.mha", work / "ct.mha"
    sitk.WriteImage(pet, str(pet_path), True)
    sitk.WriteImage(ct, str(ct_path), True)
    del phantom, pet, ct

    predictor = Predictor.from_path(weights, InferenceConfig(device=args.device, batch_size=args.batch_size,
                                                             compile=args.compile, body_windows=args.body_windows))
    depth = args.slices
    print(f"machine: {cpu_label()}, torch {torch.__version__}; study {args.size}x{args.size}x{depth}; "
          f"encoder {args.encoder}")
    print(f"project: device {predictor.device}, autocast {predictor.dtype}, batch {predictor.batch_size}, "
          f"channels_last, inference_mode, batch norm folded, body windows {args.body_windows}")
    seed_times, project_runs = [], []
    for _ in range(args.repeats):
        project_runs.append(project_way(predictor, pet_path, ct_path, work / "project.mha"))
        seed_times.append(seed_way(network, pet_path, ct_path, work / "seed.mha"))
        print(f"  run: project {project_runs[-1].total():.1f} s, seed way {seed_times[-1]:.1f} s", flush=True)
    best = min(project_runs, key=CaseTimings.total)
    project_s, seed_s = best.total(), min(seed_times)
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "project.mha"))).astype(bool)
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "seed.mha"))).astype(bool)
    mask_dice = dice(a, b)

    flops = flops_per_slice(build_network(config).eval(), config.crop_size)
    peak, how = cpu_peak_flops(predictor.dtype)
    achieved = flops * depth / best.network
    outside = 1 - best.network / project_s
    print(f"seed way : {seed_s:8.1f} s/case {depth / seed_s:7.2f} slices/s (batch 1, fp32)")
    print(f"project  : {project_s:8.1f} s/case {depth / project_s:7.2f} slices/s")
    print(f"split    : read {best.read:.2f} s, preprocess {best.preprocess:.2f} s, network {best.network:.2f} s, "
          f"postprocess {best.postprocess:.2f} s, write {best.write:.2f} s; outside the network {100 * outside:.1f} %")
    print(f"network  : {flops / 1e9:.1f} GFLOP per 256x256 slice; achieved {achieved / 1e12:.3f} TFLOP/s = "
          f"{100 * achieved / peak:.1f} % of peak ({how})")
    print(f"masks    : project {a.sum()} voxels, seed way {b.sum()} voxels")
    print_profile(predictor, config.crop_size)
    print(f"speedup {seed_s / project_s:.2f} mask_dice {mask_dice:.4f}")


if __name__ == "__main__":
    main()
