"""GPU figures in one run (under 5 minutes on an H200): network slices/s per precision and batch, with and
without torch.compile (CUDA graphs), mask agreement with fp32, one 400x400x326 study end to end (checked and
segmented the way a run takes it), and the training step rate at batch 24. Run through bench/gpu.sh on the GPU machine.

    python -m bench.gpu [--device cuda] [--smoke]      (--smoke: tiny encoder, few iterations, any device)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench.api import segment_images
from bench.peak import dtype_name, print_machine
from model import ModelConfig, Predictor, build_network
from model.arguments import device_name
from model.checkpoint import Checkpoint
from model.devices import autocast_dtypes, precision_rule
from model.metrics import dice
from model.preprocessing import NormalisationConfig
from phantoms import PhantomSpec, make_phantom
from train.fit import TrainModule


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def slices_per_second(fn, x: torch.Tensor, device: torch.device, iterations: int) -> float:
    for _ in range(3):
        fn(x)
    sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        fn(x)
    sync(device)
    return iterations * x.shape[0] / (time.perf_counter() - start)


def slice_flops(config: ModelConfig) -> int:
    """Network FLOPs of one crop-sized slice (counted on the meta device: nothing runs)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        network = build_network(config).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        network(torch.zeros(1, 2, config.crop_size, config.crop_size, device="meta"))
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", type=device_name, default="cuda")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    encoder = "regnety_002" if args.smoke else "regnety_160"
    batches = (4,) if args.smoke else (8, 32, 128)
    iterations = 2 if args.smoke else 20
    torch.backends.cudnn.benchmark = True
    config = ModelConfig(encoder=encoder, normalisation=NormalisationConfig(scheme="zscore_per_slice"))
    torch.manual_seed(0)
    network = build_network(config).eval()
    with torch.no_grad():
        network.segmentation_head[0].weight.mul_(20.0)  # decisive logits, as bench/inference.py
    network.to(device).to(memory_format=torch.channels_last)
    peaks = print_machine(device, tuple(autocast_dtypes().values()), sizes="tiny" if args.smoke else "gpu")
    flops = slice_flops(config)

    phantom = make_phantom(1, spec=PhantomSpec(size=128 if args.smoke else 400, slices=8 if args.smoke else 326))
    inputs = torch.randn(max(batches), 2, 256, 256, device=device).contiguous(memory_format=torch.channels_last)
    reference = None
    print("| precision | batch | eager slices/s | eager share of the measured peak | compiled (CUDA graphs) slices/s "
          "| mask Dice vs fp32 |")
    print("|---|---|---|---|---|---|")
    for name, dtype in autocast_dtypes().items():

        @torch.inference_mode()
        def run(x: torch.Tensor, dtype: torch.dtype = dtype) -> torch.Tensor:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                return network(x)

        masks = run(inputs[:8]) > 0
        if reference is None:
            reference = masks
        agreement = dice(masks.cpu().numpy(), reference.cpu().numpy())
        for batch in batches:
            eager = slices_per_second(run, inputs[:batch], device, iterations)
            compiled_rate = float("nan")
            # One compile (about a minute for regnety_160) keeps the script inside its 5-minute budget.
            if not args.smoke and name == "fp16" and batch == 32 and device.type == "cuda":
                compiled = torch.compile(run, mode="reduce-overhead")
                compiled_rate = slices_per_second(compiled, inputs[:batch], device, iterations)
            share = peaks.share(eager * flops, dtype).replace(f" of the measured {dtype_name(dtype)}", "")
            print(f"| {name} | {batch} | {eager:.0f} | {share} | {compiled_rate:.0f} | {agreement:.4f} |", flush=True)

    pet, ct, _ = phantom.images()
    member = Checkpoint(config=config, network=network, path=Path("random"))
    for batch in (32, 64):
        predictor = Predictor.from_checkpoints([member], device=str(device), batch_size=batch)
        segment_images(pet, ct, predictor)  # warm-up
        sync(device)
        start = time.perf_counter()
        timings = segment_images(pet, ct, predictor).timings
        sync(device)
        print(f"end to end {pet.GetSize()} batch {batch}: {time.perf_counter() - start:.2f} s "
              f"(network {timings.network:.2f} s of it)", flush=True)

    module = TrainModule(build_network(config)).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-5)
    batch = 4 if args.smoke else 24
    image = torch.randn(batch, 2, 256, 256, device=device).contiguous(memory_format=torch.channels_last)
    mask = (torch.rand(batch, 1, 256, 256, device=device) > 0.95).float()
    # auto's training rule; a CPU (the smoke run) counted as having bf16, as the GPU runs are what is measured
    dtype = precision_rule("auto", device, training=True, native_bf16=True if device.type == "cpu" else None).dtype

    def step(_: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=dtype):
            loss, _terms = module(image, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    rate = slices_per_second(step, image, device, 2 if args.smoke else 10)
    print(f"training, batch {batch}, {dtype}: {rate / batch:.2f} steps/s = {rate:.0f} slices/s")


if __name__ == "__main__":
    main()
