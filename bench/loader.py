"""How fast the training input pipeline delivers slices, and how many cores an H200 would need.

    python -m bench.loader [--studies 3] [--items 400] [--train-steps 2]

Builds a prepared store of full-size phantoms (400x400x326 at 2.04 mm), then measures
1. slices per second of one worker process (SliceDataset: memory-mapped read, normalisation, crop),
2. the same through a DataLoader with this machine's cores as workers, batch 24,
3. the augmentation (kornia, flips + affine + contrast) per batch of 24 on this CPU,
4. training steps per second of the regnety_160 U-Net on this CPU (bf16 where supported),
and compares the per-worker rate with what an H200 training at batch 24 would consume. The H200's step rate
is not measured here (no GPU): it is derived from the training FLOPs per step counted here and an assumed
achieved throughput, printed with the assumption.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from bench.peak import SIZES, print_machine
from model.arguments import number
from model.config import ModelConfig
from model.network import build_network
from model.preprocessing import NormalisationConfig
from phantoms import write_dataset
from train.augment import augment, build_augmentation
from train.config import FitConfig
from train.data import SliceDataset
from train.fit import TrainModule, training_precision
from train.prepare import load_index, prepare
from train.sampler import WholeBodySampler

# Measured, not theoretical: an 8192^3 bf16 matrix product ran at 788 TFLOP/s on an H200 of this workplace
# (device tool, KINDS.md); `python -m bench.peak --device cuda --size gpu` measures it again on a GPU machine.
H200_BF16_DENSE_PEAK = 788e12
ASSUMED_UTILISATION = 0.25  # of that peak, for a grouped-conv RegNet U-Net with torch.compile and channels_last


def training_flops_per_step(config: ModelConfig, batch: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    network = build_network(config)
    counter = FlopCounterMode(display=False)
    with counter:
        out = network(torch.zeros(batch, 2, config.crop_size, config.crop_size))
        out.float().mean().backward()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=number(int, 1, 10_000), default=3)
    parser.add_argument("--items", type=number(int, 1, 10**6), default=400, help="slices read per measurement")
    parser.add_argument("--train-steps", type=number(int, 1, 10**6), default=2)
    parser.add_argument("--train-batch", type=number(int, 1, 1024), default=8,
                        help="batch for the CPU training-step measurement")
    parser.add_argument("--peak-size", choices=list(SIZES), default="full",
                        help="sizes of the matmul and conv2d that measure the peaks (tiny: a smoke run)")
    args = parser.parse_args()
    peaks = print_machine("cpu", (torch.float32, training_precision(torch.device("cpu"))[0]), sizes=args.peak_size)
    work = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    write_dataset(work / "src", args.studies, seed=3, negative_fraction=0.0, progress=False)
    prepare(work / "src", "tcia", work / "data", workers=min(2, os.cpu_count() or 1), progress=False)
    studies = load_index(work / "data")
    config = ModelConfig(normalisation=NormalisationConfig(scheme="zscore_per_slice"))
    paper = FitConfig()  # the paper's whole-body sets (FitConfig's defaults are paper.json's)
    sampler = WholeBodySampler(studies, alpha=paper.alpha, beta=paper.beta, set_carry_over=paper.set_carry_over,
                               seed=0, set_size=paper.set_size)
    items = (sampler.epoch_items(0) * 10)[: args.items]
    print(f"store: {len(studies)} studies of {studies[0]['source_shape']} (stored {studies[0]['shape']}), "
          f"{sum(len(s['lesion_slices']) for s in studies)} lesion slices")

    dataset = SliceDataset(work / "data", studies, config)
    dataset[items[0]]  # open the memory maps
    start = time.perf_counter()
    for item in items:
        dataset[item]
    per_worker = len(items) / (time.perf_counter() - start)
    print(f"one worker (read + normalise + crop): {per_worker:.0f} slices/s")

    workers = os.cpu_count() or 1
    loader = DataLoader(dataset, batch_size=24, sampler=items, num_workers=workers, multiprocessing_context="spawn",
                        persistent_workers=True)
    batches = list(loader)  # the first pass starts the workers
    start = time.perf_counter()
    batches = list(loader)
    loader_rate = len(items) / (time.perf_counter() - start)
    print(f"DataLoader, {workers} workers, batch 24 (workers already started): {loader_rate:.0f} slices/s")

    aug = build_augmentation()
    image, mask = batches[0]
    augment(aug, image, mask)
    start = time.perf_counter()
    for image, mask in batches:
        augment(aug, image, mask)
    aug_rate = len(items) / (time.perf_counter() - start)
    print(f"augmentation on this CPU (kornia, batch 24): {aug_rate:.0f} slices/s; on a GPU it runs on the device")
    per_worker_aug = 1 / (1 / per_worker + 1 / aug_rate)
    print(f"one worker if it also augmented on the CPU: {per_worker_aug:.0f} slices/s")

    module = TrainModule(build_network(config)).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-5)
    dtype, _ = training_precision(torch.device("cpu"))
    image, mask = image[: args.train_batch], mask[: args.train_batch]
    seconds = []
    for _ in range(args.train_steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss, _ = module(image.contiguous(memory_format=torch.channels_last), mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - start)
    step = min(seconds[1:])
    print(f"training on this CPU ({dtype}, regnety_160, batch {args.train_batch}): {1 / step:.3f} steps/s = "
          f"{args.train_batch / step:.2f} slices/s; "
          f"{peaks.share(training_flops_per_step(config, args.train_batch) / step, dtype)}")

    flops = training_flops_per_step(config, 24)
    h200_steps = H200_BF16_DENSE_PEAK * ASSUMED_UTILISATION / flops
    needed = h200_steps * 24
    print(f"H200 estimate: {flops / 1e12:.2f} TFLOP per batch-24 training step; at {ASSUMED_UTILISATION:.0%} of "
          f"{H200_BF16_DENSE_PEAK / 1e12:.0f} TFLOP/s bf16 that is {h200_steps:.1f} steps/s = {needed:.0f} slices/s")
    print(f"workers needed: {needed / per_worker:.1f} (augmenting on the GPU), {needed / per_worker_aug:.1f} "
          f"(augmenting in the workers); 16 cores {'suffice' if needed / per_worker <= 16 else 'do not suffice'}")
    print(f"feed_ratio_16_cores {16 * per_worker / needed:.2f}")


if __name__ == "__main__":
    main()
