"""Where the network runs and in what precision: the one home of the "auto" rules, for inference and training.

``precision_rule`` answers from a table (AUTO_PRECISION) keyed by what the device is and whether it has
native bf16; the CPU feature is a parameter, so a test states the rule without depending on its machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from model.arguments import PRECISION_TABLE, Precision
from model.errors import InputError


def dtype_of(precision: str) -> torch.dtype:
    """The torch dtype of a model.arguments.PRECISION_TABLE entry (int8's too: an int8 model's)."""
    return getattr(torch, PRECISION_TABLE[precision].dtype)


def autocast_dtypes() -> dict[str, torch.dtype]:
    """The precisions PyTorch computes in under autocast, by name, with their dtypes (read from the table when
    asked, so that an entry added to it is here too)."""
    return {name: dtype_of(name) for name, entry in PRECISION_TABLE.items() if entry.autocast}


def precision_name(dtype: torch.dtype) -> str:
    """The autocast precision's name of ``dtype`` (torch.bfloat16: "bf16")."""
    return next(name for name, value in autocast_dtypes().items() if value == dtype)


@dataclass(frozen=True)
class PrecisionRule:
    """The autocast dtype a run takes, why (printed at the start of a run), and whether training needs a
    GradScaler (fp16 gradients underflow without one)."""

    dtype: torch.dtype
    why: str
    scaler: bool = False


# What "auto" picks, by (device kind, the device has native bf16, training). Inference on CUDA takes fp16
# whatever the GPU (the platform's T4 has no bf16); training on CUDA takes bf16 where the GPU has it. A CPU
# takes bf16 only where it is native (AVX512-BF16 or AMX): emulated bf16 is slower than fp32.
AUTO_PRECISION: dict[tuple[str, bool, bool], PrecisionRule] = {
    ("cuda", False, False): PrecisionRule(torch.float16, "auto: fp16 autocast on CUDA"),
    ("cuda", True, False): PrecisionRule(torch.float16, "auto: fp16 autocast on CUDA"),
    ("cuda", False, True): PrecisionRule(torch.float16, "auto: fp16 autocast on CUDA without bf16", scaler=True),
    ("cuda", True, True): PrecisionRule(torch.bfloat16, "auto: the GPU has bf16"),
    ("cpu", False, False): PrecisionRule(torch.float32, "auto: the CPU has no native bf16"),
    ("cpu", True, False): PrecisionRule(torch.bfloat16, "auto: the CPU has native bf16"),
    ("cpu", False, True): PrecisionRule(torch.float32, "auto: the CPU has no native bf16"),
    ("cpu", True, True): PrecisionRule(torch.bfloat16, "auto: the CPU has native bf16"),
}


# What a CPU offers the network, from the slowest kind to the fastest; bench.inference measures each backend and
# precision on the kind it runs on, and AUTO_CPU_RUNTIME keeps the fastest that keeps the masks.
CPU_KINDS = ("baseline", "avx2", "avx512", "avx512_bf16", "amx")
# The kinds with native bf16 arithmetic (AVX512-BF16 or AMX); emulated bf16 is slower than fp32.
NATIVE_BF16_KINDS = ("avx512_bf16", "amx")


def cpu_kind() -> str:
    """This CPU's CPU_KINDS entry: AMX tiles (bf16/int8 matrix units), AVX-512 with native bf16, AVX-512 without
    it, AVX2, or none of these (as PyTorch's own CPU checks see them)."""
    if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
        return "amx"
    if getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
        return "avx512_bf16"
    capability = torch.backends.cpu.get_cpu_capability()
    return {"AVX512": "avx512", "AVX2": "avx2"}.get(capability, "baseline")


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic: cpu_kind's one reading of the CPU."""
    return cpu_kind() in NATIVE_BF16_KINDS


# What --backend auto runs on a CPU of each kind, and in which precision --precision auto (model.backends reads
# it): the fastest backend and precision whose masks pass test.sh's check, measured by bench.inference (README,
# "Performance"). AMX (Xeon, family 6 model 167, regnety_160, batch 8): OpenVINO bf16 0.338 s a batch against
# PyTorch eager bf16 0.673 and fp32 2.338; at fp32 OpenVINO 1.903. AVX-512 bf16 (Zen 4, the figures):
# OpenVINO bf16 1.02 s against PyTorch bf16 1.37, fp32 2.12 against 2.69 (the AVX2 kinds' stand-in: not
# measured on an AVX2-only CPU yet). Without AVX2 PyTorch stays.
AUTO_CPU_RUNTIME: dict[str, tuple[str, str]] = {
    "amx": ("openvino", "bf16"),
    "avx512_bf16": ("openvino", "bf16"),
    "avx512": ("openvino", "fp32"),
    "avx2": ("openvino", "fp32"),
    "baseline": ("torch", "fp32"),
}
# The kinds where OpenVINO int8 is faster than the kind's precision above: auto takes int8 there when the weights
# have an int8 model that passed train.quantise's acceptance (so that it keeps the masks). Zen 4: 0.59 s a batch
# against bf16's 1.02 (the issue's figures); not AMX, where int8 (its float parts in f32) took 0.907 s against
# bf16's 0.338 (bench.inference --int8).
AUTO_INT8_KINDS = ("avx512_bf16",)


def device_kind(device: torch.device) -> str:
    """The AUTO_PRECISION key of a device: CUDA, or anything else, which follows the CPU's rule."""
    return "cuda" if device.type == "cuda" else "cpu"


def has_native_bf16(device: torch.device) -> bool:
    if device_kind(device) == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_supports_bf16()


def resolve_device(device: str) -> torch.device:
    """``auto``: the GPU where PyTorch sees one, else the CPU; a CUDA device asked for must be there."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA GPU is visible to PyTorch")
    return torch.device(device)


def precision_rule(precision: Precision | str, device: torch.device, *, training: bool = False,
                   native_bf16: bool | None = None) -> PrecisionRule:
    """The rule ``precision`` takes on ``device``. ``native_bf16``: whether the device has native bf16 (None:
    ask the device; only "auto" asks). Training in fp16 is CUDA-only (InputError elsewhere)."""
    if training and precision == "fp16" and device_kind(device) != "cuda":
        raise InputError(f"precision fp16 trains on CUDA only (device {device}); use fp32 or bf16")
    if precision != "auto":
        return PrecisionRule(autocast_dtypes()[precision], "as asked", scaler=training and precision == "fp16")
    if native_bf16 is None:
        # Inference on CUDA is fp16 whatever the GPU has: no need to ask it.
        native_bf16 = False if device_kind(device) == "cuda" and not training else has_native_bf16(device)
    return AUTO_PRECISION[device_kind(device), native_bf16, training]


def resolve_precision(precision: Precision, device: torch.device, *, native_bf16: bool | None = None) -> torch.dtype:
    """The inference autocast dtype (fp32: no autocast)."""
    return precision_rule(precision, device, native_bf16=native_bf16).dtype


class _Settings(Protocol):
    precision: Precision


class RunsOnDevice(Protocol):
    """What describe_precision reads of a predictor (model.inference.Predictor)."""

    device: torch.device
    dtype: torch.dtype
    settings: _Settings


def describe_precision(predictor: RunsOnDevice) -> str:
    """Where and in what precision a predictor runs, and why, as one phrase: "cpu, bf16 (auto: the CPU has
    native bf16)". Printed at the start of a run, so that a log says what produced its masks."""
    runtime = getattr(predictor, "runtime", None)  # model.backends.RuntimeChoice: the backend too, and why
    if runtime is not None:
        return f"{predictor.device}, {runtime.describe()} ({runtime.why})"
    device, dtype = predictor.device, predictor.dtype
    name = precision_name(dtype)
    if predictor.settings.precision == "auto":
        # The rule that gave this dtype (the device's bf16 was asked when the predictor was made).
        why = precision_rule("auto", device, native_bf16=dtype == torch.bfloat16).why
    else:
        why = "as asked"
    return f"{device}, {name} ({why})"
