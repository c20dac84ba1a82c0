"""End-to-end inference on a whole-body phantom: this project's way, at fp32 and at --precision auto, against a
re-creation of the seed code's.

    python -m bench.inference [--size 400 --slices 326] [--repeats 1] [--encoder regnety_160] [--body-windows]
    python -m bench.inference --size 128 --slices 16 --encoder regnety_002 --peak-size tiny   # a smoke run

All ways use the same random weights (the head scaled so that logits are decisive and the masks can be
compared), the same input files and the same machine, in alternating runs. The seed's way: read with
SimpleITK, then per slice: numpy z-score over the body, a 256x256 crop centred on the body, batch 1, fp32,
no channels_last, paste back, write. The project's way is ``model.run_case`` (read, segment, write), once at
fp32 and once at the precision --precision auto picks (bf16 autocast on a CPU, fp16 on CUDA). Prints the
machine (CPU model, family/model, its vector/matrix flags, torch's CPU capability, threads), the measured
matmul and conv2d peaks at both precisions (bench/peak.py, same process and threads), seconds per case,
slices per second, the ratios, the split of the project's time, the network's FLOPs per slice, its TFLOP/s as
a share of the measured peak of the same precision, and the agreement of the fp32 and auto masks.
Last line: ``speedup <ratio> mask_dice <dice> fp32_auto_dice <dice>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from bench.api import run_one_case
from bench.peak import SIZES, Peaks, dtype_name, print_machine
from model import InferenceConfig, ModelConfig, Predictor, build_network, save_checkpoint
from model.arguments import device_name, number
from model.inference import CaseTimings
from model.metrics import dice
from model.preprocessing import NormalisationConfig
from phantoms import PhantomSpec, make_phantom


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



def flops_per_slice(network: torch.nn.Module, crop: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        network(torch.zeros(1, 2, crop, crop))
    return counter.get_total_flops()


def print_profile(predictor: Predictor, crop: int, rows: int = 8) -> None:
    """Where one batch of the project's network time goes, by operator (torch.profiler, self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    tiles = torch.randn(predictor.batch_size, 2, crop, crop)
    predictor.predict_tiles(tiles)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        predictor.predict_tiles(tiles)
    print(f"profile of one batch of {predictor.batch_size} (top {rows} operators by self CPU time):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=number(int, 16, 4096), default=400)
    parser.add_argument("--slices", type=number(int, 1, 4096), default=326)
    parser.add_argument("--repeats", type=number(int, 1, 1000), default=1, help="alternating runs of each way")
    parser.add_argument("--encoder", default="regnety_160")
    parser.add_argument("--batch-size", type=number(int, 1, 1024), default=None)
    parser.add_argument("--device", type=device_name, default="cpu")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the project's network (the first run then includes compiling)")
    parser.add_argument("--body-windows", action="store_true",
                        help="windows shrunk to the body's box (fewer FLOPs; see python -m bench.flops)")
    parser.add_argument("--peak-size", choices=list(SIZES), default="full",
                        help="sizes of the matmul and conv2d that measure the peaks (tiny: a smoke run)")
    parser.add_argument("--no-profile", action="store_true", help="skip the torch.profiler table")
    return parser.parse_args()


def make_inputs(work: Path, args: argparse.Namespace) -> tuple[ModelConfig, torch.nn.Module, Path, Path, Path]:
    """(config, network, weights, pet path, ct path): random weights with a decisive head, one phantom."""
    torch.manual_seed(0)
    config = ModelConfig(encoder=args.encoder, normalisation=NormalisationConfig(scheme="zscore_per_slice"))
    network = build_network(config).eval()
    with torch.no_grad():  # decisive logits: random features, but a mask that precision barely moves
        network.segmentation_head[0].weight.mul_(20.0)
    weights = save_checkpoint(network, config, work / "weights" / "model")
    phantom = make_phantom(1, spec=PhantomSpec(size=args.size, slices=args.slices))
    pet, ct, _ = phantom.images()
    pet_path, ct_path = work / "pet.mha", work / "ct.mha"
    sitk.WriteImage(pet, str(pet_path), True)
    sitk.WriteImage(ct, str(ct_path), True)
    return config, network, weights, pet_path, ct_path


def read_mask(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(bool)


def report(name: str, best: CaseTimings, depth: int, flops: int, peaks: Peaks, dtype: torch.dtype) -> None:
    """The project's figures at one precision: time, split, and the network's share of the measured peak."""
    total = best.total()
    print(f"project {name:4s}: {total:8.1f} s/case {depth / total:7.2f} slices/s; read {best.read:.2f} s, "
          f"preprocess {best.preprocess:.2f} s, network {best.network:.2f} s, postprocess {best.postprocess:.2f} s, "
          f"write {best.write:.2f} s; outside the network {100 * (1 - best.network / total):.1f} %")
    print(f"network {name:4s}: {peaks.share(flops * depth / best.network, dtype)}")


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-inference-"))
    config, network, weights, pet_path, ct_path = make_inputs(work, args)
    settings = InferenceConfig(device=args.device, batch_size=args.batch_size, compile=args.compile,
                               body_windows=args.body_windows)
    auto = Predictor.from_path(weights, settings)
    fp32 = Predictor.from_path(weights, dataclasses.replace(settings, precision="fp32"))
    peaks = print_machine(auto.device, (torch.float32, auto.dtype), sizes=args.peak_size)
    depth = args.slices
    print(f"study {args.size}x{args.size}x{depth}; encoder {args.encoder}; project: device {auto.device}, autocast "
          f"{dtype_name(auto.dtype)} (and fp32), batch {auto.batch_size}, channels_last, inference_mode, batch norm "
          f"folded, body windows {args.body_windows}")
    seed_times, runs = [], {"auto": [], "fp32": []}
    for _ in range(args.repeats):
        runs["auto"].append(run_one_case(pet_path, ct_path, work / "auto.mha", auto))
        runs["fp32"].append(run_one_case(pet_path, ct_path, work / "fp32.mha", fp32))
        seed_times.append(seed_way(network, pet_path, ct_path, work / "seed.mha"))
        print(f"  run: project {dtype_name(auto.dtype)} {runs['auto'][-1].total():.1f} s, project fp32 "
              f"{runs['fp32'][-1].total():.1f} s, seed way {seed_times[-1]:.1f} s", flush=True)
    best = {name: min(times, key=CaseTimings.total) for name, times in runs.items()}
    seed_s = min(seed_times)
    masks = {name: read_mask(work / f"{name}.mha") for name in ("auto", "fp32", "seed")}
    flops = flops_per_slice(build_network(config).eval(), config.crop_size)
    print(f"seed way    : {seed_s:8.1f} s/case {depth / seed_s:7.2f} slices/s (batch 1, fp32)")
    print(f"network     : {flops / 1e9:.1f} GFLOP per {config.crop_size}x{config.crop_size} slice")
    report(dtype_name(auto.dtype), best["auto"], depth, flops, peaks, auto.dtype)
    report("fp32", best["fp32"], depth, flops, peaks, torch.float32)
    agreement = dice(masks["auto"], masks["fp32"])
    print(f"masks       : project {dtype_name(auto.dtype)} {masks['auto'].sum()} voxels, project fp32 "
          f"{masks['fp32'].sum()} voxels, seed way {masks['seed'].sum()} voxels; {dtype_name(auto.dtype)} against "
          f"fp32 Dice {agreement:.4f}, {(masks['auto'] != masks['fp32']).sum()} voxels differ")
    if not args.no_profile:
        print_profile(auto, config.crop_size)
    print(f"speedup {seed_s / best['auto'].total():.2f} mask_dice {dice(masks['auto'], masks['seed']):.4f} "
          f"fp32_auto_dice {agreement:.4f}")


if __name__ == "__main__":
    main()
