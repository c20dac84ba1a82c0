"""Which runtime runs the network, and in what precision: PyTorch (the GPU's, and any CPU's) or OpenVINO's CPU
runtime (model.openvino_backend), chosen by ``--backend`` and ``--precision`` or, for ``auto``, by the CPU's
kind (model.devices.AUTO_CPU_RUNTIME). The choice is made once per run, before the weights load; a choice
that cannot run here (OpenVINO on a GPU or not installed, a precision the runtime lacks on this CPU) is one
InputError line.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch

from model.arguments import Backend, InferencePrecision
from model.devices import (
    AUTO_CPU_RUNTIME,
    AUTO_INT8_KINDS,
    NATIVE_BF16_KINDS,
    cpu_kind,
    device_kind,
    dtype_of,
    precision_name,
    precision_rule,
)
from model.errors import InputError
from model.openvino_backend import OPENVINO_HINTS, runtime_version

# NATIVE_BF16_KINDS (model.devices): the others would run OpenVINO's bf16 hint as f32 and call it bf16.


@dataclass(frozen=True)
class RuntimeChoice:
    """The backend ("torch" or "openvino"), the precision the network computes in (a name in
    model.arguments.PRECISION_TABLE) and why."""

    backend: str
    precision: str
    why: str

    @property
    def dtype(self) -> torch.dtype:
        return dtype_of(self.precision)

    def describe(self) -> str:
        """'bf16' for PyTorch (as the run's line always said), 'OpenVINO 2026.4.1 bf16' for OpenVINO."""
        if self.backend == "torch":
            return self.precision
        return f"OpenVINO {runtime_version()} {self.precision}"


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def _torch_choice(precision: str, device: torch.device, why: str | None = None) -> RuntimeChoice:
    if precision == "int8":
        raise InputError("--precision int8 runs on OpenVINO's CPU runtime only (--backend openvino or auto, on a CPU)")
    rule = precision_rule(precision, device)
    return RuntimeChoice("torch", precision_name(rule.dtype), why or rule.why)


def _openvino_choice(precision: str, kind: str, compile_asked: bool, int8_ready: bool) -> RuntimeChoice:
    """--backend openvino: its precision, or the one line saying why it cannot run."""
    if compile_asked:
        raise InputError("--compile is PyTorch's torch.compile; --backend openvino compiles the network itself: "
                         "give one of them")
    if precision == "auto":
        chosen = "int8" if int8_ready and kind in AUTO_INT8_KINDS else "bf16" if kind in NATIVE_BF16_KINDS else "fp32"
        why = f"auto: the CPU ({kind}) {'has' if chosen != 'fp32' else 'has no'} native bf16" + (
            ", and the weights an accepted int8 model" if chosen == "int8" else "")
    else:
        chosen, why = precision, "as asked"
    if chosen not in OPENVINO_HINTS:
        raise InputError(f"--precision {chosen} --backend openvino: OpenVINO's CPU runtime runs "
                         f"{', '.join(OPENVINO_HINTS)} here; use one of them or --backend torch")
    if chosen == "bf16" and kind not in NATIVE_BF16_KINDS:
        raise InputError(f"--precision bf16 --backend openvino: this CPU ({kind}) has no native bf16 (AVX512-BF16 "
                         "or AMX), where OpenVINO runs fp32 instead; use fp32, or --backend torch (emulated bf16)")
    if chosen == "int8" and not int8_ready:
        raise InputError("--precision int8: these weights have no int8 model that passed the acceptance check (make "
                         "one: python -m train.quantise calibrate, then int8; see its record NAME.int8.json)")
    if not openvino_installed():
        raise InputError("--backend openvino: OpenVINO is not installed in this Python (requirements.txt: "
                         "run ./bootstrap.sh, or pip install openvino)")
    return RuntimeChoice("openvino", chosen, why)


def choose_runtime(backend: Backend | str, precision: InferencePrecision | str, device: torch.device, *,
                   compile_asked: bool = False, int8_ready: bool = False, kind: str | None = None) -> RuntimeChoice:
    """The runtime a run takes. A GPU runs PyTorch (fp16 autocast: the platform's T4). On a CPU, ``auto`` takes
    AUTO_CPU_RUNTIME's backend for this CPU's kind (``kind``: a CPU_KINDS entry, None: this CPU's) at the
    precision asked, or at its precision too for ``--precision auto`` (int8 where ``int8_ready``, every member
    having an int8 model that passed train.quantise's acceptance, and int8 is the faster on this kind:
    AUTO_INT8_KINDS); --compile keeps PyTorch's torch.compile; fp16 and bf16 on a CPU without native bf16 are
    PyTorch's alone."""
    if backend not in ("auto", "torch", "openvino"):
        raise InputError(f"backend {backend!r}: expected auto, torch or openvino")
    if device_kind(device) == "cuda":
        if backend == "openvino":
            raise InputError(f"--backend openvino runs on the CPU; device {device} is a GPU, which runs PyTorch "
                             "(use --device cpu, or --backend auto)")
        return _torch_choice(precision, device)
    kind = kind or cpu_kind()
    if backend == "openvino":
        return _openvino_choice(precision, kind, compile_asked, int8_ready)
    if backend == "torch":
        return _torch_choice(precision, device)
    if compile_asked:
        return _torch_choice(precision, device, "auto: --compile asks for PyTorch's torch.compile")
    fastest, fastest_precision = AUTO_CPU_RUNTIME[kind]
    if fastest == "openvino" and precision in ("auto", "int8") and (precision == "int8" or kind in AUTO_INT8_KINDS):
        if int8_ready or precision == "int8":
            return _openvino_choice("int8", kind, False, int8_ready)
    chosen = fastest_precision if precision == "auto" else str(precision)
    runs_here = fastest == "openvino" and chosen in OPENVINO_HINTS and openvino_installed() and (
        chosen != "bf16" or kind in NATIVE_BF16_KINDS)
    if not runs_here:
        why = "OpenVINO is not installed" if fastest == "openvino" and not openvino_installed() else \
            f"PyTorch runs {chosen} on a {kind} CPU"
        return _torch_choice(chosen, device, f"auto: {why}")
    why = f"auto: the fastest on this CPU kind, {kind} (model.devices.AUTO_CPU_RUNTIME)" if precision == "auto" \
        else f"as asked; auto: OpenVINO, the faster at {chosen} on this CPU kind, {kind}"
    return RuntimeChoice("openvino", chosen, why)
