"""Measured peaks, not theoretical ones: what this machine's matrix product and a typical convolution reach.

    python -m bench.peak [--device cpu] [--size full|tiny]

A share of "the CPU's peak" computed from flags and a clock is wrong wherever the flags do not tell the width
of the units (a Zen 4 runs AVX-512 on 256-bit units: half the fp32 peak that 2 FMA units x 16 lanes would
give, and its bf16 dot products twice its fp32 rate). So each bench script measures, in the same process and
with the same threads, a large ``torch.matmul`` and a ``conv2d`` of the network's kind (3x3, channels_last,
a decoder stage's width) in fp32 and in the precision the run uses (bf16 on a CPU, fp16 on CUDA: the dtype
autocast runs these operators in; the inputs are made in it once, so no cast is timed), and reports the
network's FLOP/s as a share of the measured peak of the same precision. Every figure is the best of a few
timed rounds after a warm-up.
"""

from __future__ import annotations

import argparse
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from model.arguments import device_name
from model.devices import precision_rule

# The flags that decide which kernels oneDNN can use for fp32, bf16/fp16 and int8 work.
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
                  "amx_int8")
# (matrix side, conv batch, conv channels, conv side, timed rounds)
SIZES = {"full": (4096, 8, 128, 64, 5), "tiny": (256, 1, 16, 16, 2), "gpu": (8192, 32, 256, 128, 5)}


@dataclass(frozen=True)
class CpuInfo:
    model: str
    family: str
    model_number: str
    flags: frozenset[str]
    logical_cpus: int

    def label(self) -> str:
        """One line: the model name (family/model), its relevant flags, present or not."""
        listed = " ".join(f"{flag}{'+' if flag in self.flags else '-'}" for flag in RELEVANT_FLAGS)
        return (f"{self.model} (family {self.family}, model {self.model_number}; {self.logical_cpus} logical CPUs; "
                f"{listed})")


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first processor's model name, family, model and flags from a /proc/cpuinfo text."""

    def field(name: str) -> str:
        match = re.search(rf"^{name}\s*:\s*(.*)$", text, re.MULTILINE)
        return match.group(1).strip() if match else "?"

    flags = field("flags")
    return CpuInfo(model=field("model name") if field("model name") != "?" else "unknown CPU",
                   family=field("cpu family"), model_number=field("model"),
                   flags=frozenset(flags.split()) if flags != "?" else frozenset(),
                   logical_cpus=len(re.findall(r"^processor\s*:", text, re.MULTILINE)))


def machine_label(device: str | torch.device = "cpu") -> str:
    """The CPU (or GPU), its relevant flags, torch's CPU capability and the thread count, in one line."""
    device = torch.device(device)
    try:
        cpu = parse_cpuinfo(Path("/proc/cpuinfo").read_text()).label()
    except OSError:
        cpu = "unknown CPU (no /proc/cpuinfo)"
    text = (f"CPU {cpu}; torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} threads")
    if device.type == "cuda":
        text += f"; GPU {torch.cuda.get_device_name(device)}"
    return text


def low_precision(device: str | torch.device) -> torch.dtype:
    """The dtype autocast uses for a run at --precision auto on a device with native bf16 (model.devices' rule):
    fp16 on CUDA, bf16 on a CPU."""
    return precision_rule("auto", torch.device(device), native_bf16=True).dtype


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn: Callable[[], object], device: torch.device, rounds: int, min_round_s: float = 0.2) -> float:
    """Seconds per call: warm-up, then the best of ``rounds`` rounds of enough calls to last ``min_round_s``."""
    fn()
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    calls = max(1, math.ceil(min_round_s / max(time.perf_counter() - start, 1e-9)))
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        _sync(device)
        best = min(best, (time.perf_counter() - start) / calls)
    return best


@torch.inference_mode()
def matmul_tflops(dtype: torch.dtype, device: str | torch.device = "cpu", n: int = 4096, rounds: int = 5) -> float:
    """TFLOP/s of an n x n by n x n ``torch.matmul`` in ``dtype`` (2 n^3 FLOP a call)."""
    device = torch.device(device)
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    return 2 * n**3 / best_seconds(lambda: torch.matmul(a, b), device, rounds) / 1e12


@torch.inference_mode()
def conv_tflops(dtype: torch.dtype, device: str | torch.device = "cpu", batch: int = 8, channels: int = 128,
                side: int = 64, rounds: int = 5) -> float:
    """TFLOP/s of a 3x3 ``conv2d``, channels -> channels at side x side, channels_last (as the network runs)."""
    device = torch.device(device)
    x = torch.randn(batch, channels, side, side, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 3, 3, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
    flops = 2 * batch * side * side * channels * channels * 9
    return flops / best_seconds(lambda: torch.nn.functional.conv2d(x, w, padding=1), device, rounds) / 1e12


def int8_matmul_tops(n: int = 4096, rounds: int = 5, threads: int | None = None) -> float | None:
    """TOP/s of an int8 n x n by n x n matrix product on OpenVINO's CPU runtime (2 n^3 operations a call): the
    pattern its int8 models run (activations quantised by a FakeQuantize, int8 weights with a per-row scale),
    which it executes on AMX or VNNI int8 units where the CPU has them (PyTorch's CPU ``_int_mm`` does not reach
    them). None without OpenVINO."""
    try:
        import numpy as np
        import openvino
        import openvino.opset13 as ops
    except ImportError:
        return None
    activations = ops.parameter([n, n], np.float32)
    bound = [ops.constant(np.float32(v)) for v in (-4.0, 4.0, -4.0, 4.0)]
    quantised = ops.fake_quantize(activations, *bound, 256)
    weights = ops.constant(np.random.default_rng(0).integers(-127, 128, (n, n), dtype=np.int8))
    scaled = ops.multiply(ops.convert(weights, "f32"), ops.constant(np.full((n, 1), 0.01, np.float32)))
    network = openvino.Model([ops.matmul(quantised, scaled, False, True)], [activations])
    compiled = openvino.Core().compile_model(network, "CPU", {
        "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"})
    request, data = compiled.create_infer_request(), np.random.default_rng(1).standard_normal((n, n), np.float32)
    return 2 * n**3 / best_seconds(lambda: request.infer({0: data}), torch.device("cpu"), rounds) / 1e12


@dataclass(frozen=True)
class Peaks:
    """Measured TFLOP/s per dtype name ('fp32', 'bf16', 'fp16'): (matmul, conv)."""

    by_dtype: dict[str, tuple[float, float]]
    sizes: str
    # int8 matmul TOP/s (int8_matmul_tops); None where not measured (a GPU, no OpenVINO).
    int8: float | None = None

    def matmul(self, dtype: torch.dtype) -> float:
        return self.by_dtype[dtype_name(dtype)][0]

    def lines(self) -> list[str]:
        n, batch, channels, side, _ = SIZES[self.sizes]
        return [f"measured peak {name}: matmul {n}^3 {mm:.3f} TFLOP/s, conv2d 3x3 {channels}->{channels} "
                f"{side}x{side} batch {batch} channels_last {conv:.3f} TFLOP/s"
                for name, (mm, conv) in self.by_dtype.items()]

    def share_of(self, achieved_flops: float, precision: str) -> str:
        """``share`` by precision name, int8 included (of the int8 matmul peak: its conv2d is not measured)."""
        if precision != "int8":
            return self.share(achieved_flops, {"fp32": torch.float32, "bf16": torch.bfloat16,
                                               "fp16": torch.float16}[precision])
        if self.int8 is None:
            return f"{achieved_flops / 1e12:.3f} TOP/s (no int8 peak measured)"
        return (f"{achieved_flops / 1e12:.3f} TOP/s = {100 * achieved_flops / 1e12 / self.int8:.1f} % of the measured "
                f"int8 matmul peak ({self.int8:.3f})")

    def share(self, achieved_flops: float, dtype: torch.dtype) -> str:
        """'X TFLOP/s = Y % of the measured <dtype> matmul peak (Z % of its conv2d)'."""
        mm, conv = self.by_dtype[dtype_name(dtype)]
        tflops = achieved_flops / 1e12
        return (f"{tflops:.3f} TFLOP/s = {100 * tflops / mm:.1f} % of the measured {dtype_name(dtype)} matmul peak "
                f"({mm:.3f}), {100 * tflops / conv:.1f} % of its conv2d ({conv:.3f})")


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def measure_peaks(device: str | torch.device = "cpu", dtypes: tuple[torch.dtype, ...] | None = None,
                  sizes: str = "full") -> Peaks:
    """fp32 and the run's low precision (or ``dtypes``), matmul and conv2d, with the current thread count."""
    n, batch, channels, side, rounds = SIZES[sizes]
    dtypes = dtypes or (torch.float32, low_precision(device))
    measured = {dtype_name(d): (matmul_tflops(d, device, n, rounds), conv_tflops(d, device, batch, channels, side,
                                                                                 rounds))
                for d in dict.fromkeys(dtypes)}
    return Peaks(measured, sizes, int8_matmul_tops(n, rounds) if torch.device(device).type == "cpu" else None)


def print_machine(device: str | torch.device = "cpu", dtypes: tuple[torch.dtype, ...] | None = None,
                  sizes: str = "full") -> Peaks:
    """Print the machine's line and its measured peaks (fp32 and the run's precision); return the peaks."""
    print(f"machine: {machine_label(device)}", flush=True)
    peaks = measure_peaks(device, dtypes, sizes)
    for line in peaks.lines():
        print(line)
    if peaks.int8 is not None:
        print(f"measured peak int8: matmul {SIZES[sizes][0]}^3 on OpenVINO's CPU runtime {peaks.int8:.3f} TOP/s")
    if sizes == "tiny":
        print("  (tiny peak sizes: a smoke run; shares of these peaks mean nothing)")
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", type=device_name, default="cpu")
    parser.add_argument("--size", choices=list(SIZES), default="full", help="tiny: a smoke run; gpu: for a GPU")
    args = parser.parse_args()
    peaks = print_machine(args.device, sizes=args.size)
    low = dtype_name(low_precision(args.device))
    print(f"{low}/fp32 matmul {peaks.by_dtype[low][0] / peaks.by_dtype['fp32'][0]:.2f}x, conv2d "
          f"{peaks.by_dtype[low][1] / peaks.by_dtype['fp32'][1]:.2f}x")


if __name__ == "__main__":
    main()
