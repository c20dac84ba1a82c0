"""Network FLOPs of one whole-body study with full windows against windows shrunk to the body (counted, not run).

    python -m bench.flops [--size 400 --slices 326 --fov 815] [--encoder regnety_160]

The study is a CT of ellipses whose widths follow a real body from skull to mid-thigh (head 150 mm wide,
neck 130 mm, shoulders 400 mm, abdomen 350 mm, thighs together 300 mm, on an 815 mm field of view); the
couch is left out (a CT couch above the body threshold would widen every box). The windows come from the
inference code's own tiling stage; FLOPs per window shape from torch.utils.flop_counter on a network built
on the meta device, so nothing is computed. Then the price: the shipped demo weights segment the shipped case
(test/input) and a phantom with both kinds of window, and the two masks are compared (Dice).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from bench.api import segment_images
from bench.peak import machine_label
from model import ModelConfig, Predictor, build_network
from model.arguments import number
from model.inference import load_chunk, tile_chunk
from model.metrics import dice
from phantoms import PhantomSpec, make_phantom
from studies.readers import read_images

ROOT = Path(__file__).resolve().parents[1]

# (distance from the top of the study in mm, lateral width in mm, front-to-back depth in mm), skull to thigh.
BODY_PROFILE = [
    (0, 120, 150), (100, 150, 190), (200, 140, 170), (230, 130, 130), (280, 130, 130), (320, 400, 200),
    (400, 360, 230), (560, 340, 240), (640, 350, 250), (760, 350, 250), (840, 370, 230), (900, 320, 180),
    (978, 300, 160),
]


def body_ct(size: int, spacing_mm: float, thickness_mm: float, first: int, count: int) -> np.ndarray:
    """Slices [first, first + count) of the study's CT: 0 HU inside the body's ellipse, air outside."""
    depth_mm, widths, depths = (np.array(column, dtype=float) for column in zip(*BODY_PROFILE, strict=True))
    z_mm = (np.arange(first, first + count) + 0.5) * thickness_mm  # beyond the profile's end: its last widths
    half_width = np.interp(z_mm, depth_mm, widths) / 2 / spacing_mm
    half_depth = np.interp(z_mm, depth_mm, depths) / 2 / spacing_mm
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    inside = (xx[None] / half_width[:, None, None]) ** 2 + (yy[None] / half_depth[:, None, None]) ** 2 <= 1.0
    return np.where(inside, 0.0, -1000.0).astype(np.float32)


def window_counts(config: ModelConfig, slices: int, size: int, spacing_mm: float, thickness_mm: float,
                  shrink: bool, chunk: int = 32) -> Counter:
    """How many windows of each (height, width) the tiling stage makes for the study."""
    counts: Counter = Counter()
    for first in range(0, slices, chunk):
        ct = body_ct(size, spacing_mm, thickness_mm, first, min(chunk, slices - first))
        tiles = tile_chunk(load_chunk(np.zeros_like(ct), ct, 0, ct.shape[0], config.crop_size, torch.device("cpu")),
                           config, overlap=0.25, shrink=shrink)
        counts.update((w.height, w.width) for w in tiles.windows)
    return counts


def demo_agreement() -> None:
    """Dice between the demo model's masks with full and with body windows, on the shipped case and a phantom."""
    import SimpleITK as sitk

    shipped = read_images([(next((ROOT / "test/input/images/pet").glob("*.mha")), "PET", sitk.sitkUnknown),
                           (next((ROOT / "test/input/images/ct").glob("*.mha")), "CT", sitk.sitkUnknown)])
    phantom = make_phantom(11, positive=True, spec=PhantomSpec(size=128, spacing=4.0728, slices=48,
                                                                slice_thickness=6.0), diagnosis="LYMPHOMA")
    full, body = (Predictor.from_path(ROOT / "weights", device="cpu", precision="fp32", body_windows=shrink)
                  for shrink in (False, True))
    for name, (pet, ct) in (("shipped case", shipped), ("phantom", phantom.images()[:2])):
        a, b = (sitk.GetArrayFromImage(segment_images(pet, ct, predictor).mask) for predictor in (full, body))
        print(f"demo weights, {name}: full windows {a.sum()} voxels, body windows {b.sum()} voxels, "
              f"mask Dice {dice(a, b):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=number(int, 16, 4096), default=400)
    parser.add_argument("--slices", type=number(int, 1, 4096), default=326)
    parser.add_argument("--fov", type=number(float, 1.0, 5000.0), default=815.0, help="in-plane field of view in mm")
    parser.add_argument("--thickness", type=number(float, 0.4, 50.0), default=3.0, help="slice thickness in mm")
    parser.add_argument("--encoder", default="regnety_160")
    args = parser.parse_args()
    from torch.utils.flop_counter import FlopCounterMode

    config = ModelConfig(encoder=args.encoder)
    with torch.device("meta"):
        network = build_network(config).eval()
    flops_of: dict[tuple[int, int], int] = {}

    def total(counts: Counter) -> float:
        for shape in counts:
            if shape not in flops_of:
                counter = FlopCounterMode(display=False)
                with counter, torch.no_grad():
                    network(torch.zeros(1, 2, *shape, device="meta"))
                flops_of[shape] = counter.get_total_flops()
        return float(sum(flops_of[shape] * n for shape, n in counts.items()))

    spacing = args.fov / args.size
    full = window_counts(config, args.slices, args.size, spacing, args.thickness, shrink=False)
    body = window_counts(config, args.slices, args.size, spacing, args.thickness, shrink=True)
    full_flops, body_flops = total(full), total(body)
    print(f"machine: {machine_label()} (FLOPs are counted, not timed: no peak is measured)")
    print(f"study {args.size}x{args.size}x{args.slices} at {spacing:.4f} mm ({args.fov:.0f} mm field of view), "
          f"{args.encoder}, crop {config.crop_size}")
    print(f"full windows: {sum(full.values())} windows, {full_flops / 1e12:.2f} TFLOP")
    print(f"body windows: {sum(body.values())} windows in {len(body)} shapes, {body_flops / 1e12:.2f} TFLOP")
    for (height, width), n in sorted(body.items(), key=lambda item: -item[1])[:8]:
        print(f"  {height}x{width}: {n} windows, {flops_of[(height, width)] / 1e9:.1f} GFLOP each")
    print(f"FLOPs saved {100 * (1 - body_flops / full_flops):.1f} % (network {full_flops / body_flops:.2f}x fewer)")
    demo_agreement()


if __name__ == "__main__":
    main()
