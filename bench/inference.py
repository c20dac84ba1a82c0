"""End-to-end inference on a whole-body phantom: the seed code's way against every runtime and precision this
CPU runs (bench/runtimes.py: PyTorch eager, OpenVINO, ONNX Runtime; torch.compile inductor with --compile; an
int8 quantisation with --int8), and what --backend auto --precision auto picks.

    python -m bench.inference [--size 400 --slices 326] [--repeats 1] [--encoder regnety_160] [--compile]
                              [--int8 [first_conv head decoder_last]] [--skip WORD ...] [--body-windows]
    python -m bench.inference --size 128 --slices 16 --encoder regnety_002 --peak-size tiny   # a smoke run

All ways use the same random weights (the head scaled so that logits are decisive and the masks can be
compared), the same input files and the same machine, in alternating runs. The seed's way: read with
SimpleITK, then per slice: numpy z-score over the body, a 256x256 crop centred on the body, batch 1, fp32,
no channels_last, paste back, write. The project's way is ``model.run_case`` (read, segment, write) with each
variant's Predictor; ONNX Runtime, which the project does not ship, runs the network alone. Every variant is
prepared (converted, compiled, quantised, warmed up) before the line "timing starts", so that a quiet window
can hold the timed part alone. Prints the machine (CPU model, family/model, its vector/matrix flags, torch's
CPU capability, threads), the measured matmul and conv2d peaks (bench/peak.py, same process and threads; int8:
an int8 matmul on OpenVINO), then one markdown row per variant: network seconds per batch (best of 3), the
ratio to PyTorch eager fp32, its share of the measured peak of its precision, the study's seconds, the ratio
to the seed's way, the share outside the network, and its mask's Dice against PyTorch fp32.
Last line: ``speedup <ratio> mask_dice <dice> fp32_auto_dice <dice> auto <variant>`` for auto's pick.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from bench.api import run_one_case
from bench.peak import SIZES, Peaks, low_precision, print_machine
from bench.runtimes import Variant, int8_variant, prepare_variants, seconds_per_batch, study_tiles
from model import InferenceConfig, ModelConfig, Predictor, build_network, save_checkpoint
from model.arguments import device_name, number
from model.devices import describe_precision
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

    tiles = torch.randn(predictor.batch_size, 2, crop, crop)  # the profile's split, not a time
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
                        help="torch.compile (inductor) too, at each precision (compiled while preparing)")
    parser.add_argument("--int8", nargs="*", default=None, metavar="LAYER",
                        help="time an int8 quantisation too (train.quantise), these layers kept in float "
                             "(first_conv, head, decoder_last; none: all int8)")
    parser.add_argument("--skip", nargs="*", default=[], metavar="WORD",
                        help="leave out the variants whose name has one of these words (OpenVINO, ONNX, eager, bf16)")
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


@dataclass
class EndToEnd:
    """A variant's best study: its seconds by stage and its mask."""

    timings: CaseTimings
    mask: np.ndarray


def run_studies(variants: list[Variant], pet_path: Path, ct_path: Path, work: Path, network: torch.nn.Module,
                repeats: int) -> tuple[float, np.ndarray, dict[str, EndToEnd]]:
    """The seed's way and every Predictor variant on the study, ``repeats`` alternating rounds, best of each."""
    seed_times: list[float] = []
    runs: dict[str, list[EndToEnd]] = {v.name: [] for v in variants if v.predictor is not None}
    for _ in range(repeats):
        for index, variant in enumerate(variants):
            if variant.predictor is not None:
                out = work / f"variant{index}.mha"
                timings = run_one_case(pet_path, ct_path, out, variant.predictor)
                runs[variant.name].append(EndToEnd(timings, read_mask(out)))
        seed_times.append(seed_way(network, pet_path, ct_path, work / "seed.mha"))
        print(f"  round: seed way {seed_times[-1]:.1f} s, " + ", ".join(
            f"{name} {done[-1].timings.total():.1f} s" for name, done in runs.items()), flush=True)
    best = {name: min(done, key=lambda run: run.timings.total()) for name, done in runs.items()}
    return min(seed_times), read_mask(work / "seed.mha"), best


def print_table(variants: list[Variant], per_batch: dict[str, float], studies: dict[str, EndToEnd], seed_s: float,
                batch: int, flops: int, peaks: Peaks) -> None:
    """One row per variant (markdown): network s/batch and its share of the peak, and the whole study."""
    reference = per_batch[variants[0].name]  # PyTorch eager fp32
    fp32_mask = studies[variants[0].name].mask
    print("| runtime, precision | prepare s | network s/batch | vs PyTorch fp32 | share of the measured peak | "
          "study s | vs the seed's way | outside the network | Dice vs PyTorch fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for variant in variants:
        seconds = per_batch[variant.name]
        row = (f"| {variant.name} | {variant.prepare_s:.1f} | {seconds:.3f} | {reference / seconds:.2f}x | "
               f"{peaks.share_of(flops * batch / seconds, variant.precision)} |")
        study = studies.get(variant.name)
        if study is None:
            row += " (network alone) | | | |"
        else:
            t = study.timings
            row += (f" {t.total():.1f} | {seed_s / t.total():.2f}x | {100 * (1 - t.network / t.total()):.1f} % "
                    f"(preprocess {t.preprocess:.2f} s) | {dice(study.mask, fp32_mask):.4f} |")
        print(row, flush=True)


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-inference-"))
    config, network, weights, pet_path, ct_path = make_inputs(work, args)
    settings = InferenceConfig(device=args.device, batch_size=args.batch_size, body_windows=args.body_windows)
    auto = Predictor.from_path(weights, dataclasses.replace(settings, backend="auto"))
    batch, crop = auto.batch_size, config.crop_size
    print(f"auto picks: {describe_precision(auto)}", flush=True)
    real = study_tiles(weights, pet_path, ct_path, max(32, batch))
    tiles = torch.from_numpy(real[:batch])
    variants = prepare_variants(weights, settings, tiles, compile_too=args.compile, skip=tuple(args.skip)) \
        if auto.device.type == "cpu" else []
    if args.int8 is not None and auto.device.type == "cpu":
        variants += int8_variant(weights, real, args.int8)
    picked = (auto.runtime.backend, auto.runtime.precision)
    auto_variant = next((v for v in variants if v.predictor is not None and not v.predictor.settings.compile
                         and (v.predictor.runtime.backend, v.predictor.runtime.precision) == picked), None)
    if auto_variant is None:  # a GPU, or a pick not among the variants: auto runs as its own variant
        variants.append(Variant(f"auto: {auto.runtime.describe()}", auto.runtime.precision, 0.0, predictor=auto))
        auto_variant = variants[-1]
    print("timing starts (everything prepared)", flush=True)
    peaks = print_machine(auto.device, (torch.float32, low_precision(auto.device)), sizes=args.peak_size)
    print(f"study {args.size}x{args.size}x{args.slices}; encoder {args.encoder}; batch {batch} of {crop}x{crop}; "
          f"body windows {args.body_windows}", flush=True)
    per_batch = {variant.name: seconds_per_batch(variant, tiles) for variant in variants}
    seed_s, seed_mask, studies = run_studies(variants, pet_path, ct_path, work, network, args.repeats)
    flops = flops_per_slice(build_network(config).eval(), crop)
    print(f"seed way    : {seed_s:8.1f} s/case {args.slices / seed_s:7.2f} slices/s (batch 1, fp32, PyTorch eager)")
    print(f"network     : {flops / 1e9:.1f} GFLOP per {crop}x{crop} slice")
    print_table(variants, per_batch, studies, seed_s, batch, flops, peaks)
    if not args.no_profile and auto.runtime.backend == "torch":
        print_profile(auto, crop)
    picked = studies[auto_variant.name]
    fp32_mask = studies[variants[0].name].mask
    print(f"speedup {seed_s / picked.timings.total():.2f} mask_dice {dice(picked.mask, seed_mask):.4f} "
          f"fp32_auto_dice {dice(picked.mask, fp32_mask):.4f} auto {auto_variant.name}")


if __name__ == "__main__":
    main()
