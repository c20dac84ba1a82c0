"""Every runtime and precision bench.inference compares on a CPU: PyTorch eager, torch.compile (inductor),
OpenVINO (model.openvino_backend) and ONNX Runtime, each at the precisions it runs here. Those the project can
run (a model.inference.Predictor: PyTorch, inductor, OpenVINO) run whole studies; ONNX Runtime, which the
project does not ship, runs the network alone on the same batches.

Each variant is prepared (converted, compiled, warmed up) before any timing, so that a quiet window holds
only the timed runs."""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model import InferenceConfig, Predictor
from model.devices import NATIVE_BF16_KINDS, cpu_kind
from model.errors import InputError


@dataclass
class Variant:
    """One runtime at one precision: a Predictor (whole studies), or a network call alone (ONNX Runtime)."""

    name: str
    precision: str
    prepare_s: float
    predictor: Predictor | None = None
    network: Callable[[torch.Tensor], torch.Tensor] | None = None

    def batch(self, tiles: torch.Tensor) -> None:
        if self.predictor is not None:
            self.predictor.predict_tiles(tiles)
        else:
            self.network(tiles)


def _predictor_variant(name: str, weights: Path, settings: InferenceConfig, warm: torch.Tensor) -> Variant:
    start = time.perf_counter()
    predictor = Predictor.from_path(weights, settings)
    predictor.predict_tiles(warm)  # torch.compile compiles here; OpenVINO and oneDNN make their kernels
    return Variant(name, predictor.runtime.precision, time.perf_counter() - start, predictor=predictor)


def onnxruntime_network(network: torch.nn.Module, channels: int, crop: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The (folded) network exported to ONNX (dynamic batch, height and width) on ONNX Runtime's CPU provider,
    with PyTorch's thread count."""
    import onnxruntime

    exported = io.BytesIO()
    torch.onnx.export(network.eval(), (torch.zeros(1, channels, crop, crop),), exported, dynamo=False,
                      input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}})
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(exported.getvalue(), options, providers=["CPUExecutionProvider"])
    return lambda tiles: torch.from_numpy(session.run(None, {"x": tiles.contiguous().numpy()})[0])


def prepare_variants(weights: Path, settings: InferenceConfig, warm: torch.Tensor, *, compile_too: bool,
                     skip: tuple[str, ...] = ()) -> list[Variant]:
    """Every variant this CPU runs, prepared: bf16 only where the CPU has it natively (emulated, it is slower
    than fp32 and no choice anyone would make); a variant that cannot run here is said and left out."""
    precisions = ("fp32", "bf16") if cpu_kind() in NATIVE_BF16_KINDS else ("fp32",)
    plans = [(f"PyTorch eager {p}", dataclasses.replace(settings, backend="torch", precision=p)) for p in precisions]
    plans += [(f"OpenVINO {p}", dataclasses.replace(settings, backend="openvino", precision=p)) for p in precisions]
    if compile_too:
        plans += [(f"torch.compile inductor {p}", dataclasses.replace(settings, backend="torch", precision=p,
                                                                         compile=True)) for p in precisions]
    variants = []
    for name, plan in plans:
        if any(word in name for word in skip):
            continue
        try:
            variant = _predictor_variant(name, weights, plan, warm)
        except (InputError, RuntimeError, ImportError) as error:  # torch.compile without a compiler, say
            print(f"{name}: not run here ({str(error).strip().splitlines()[0]})", flush=True)
            continue
        variants.append(variant)
        print(f"prepared {name} in {variant.prepare_s:.1f} s", flush=True)
    if "ONNX" not in skip:
        variants += _onnx_variant(weights)
    return variants


def _onnx_variant(weights: Path) -> list[Variant]:
    from model.checkpoint import load_checkpoint
    from model.network import fold_batch_norm

    start = time.perf_counter()
    try:
        member = load_checkpoint(weights)
        fold_batch_norm(member.network.eval())
        network = onnxruntime_network(member.network, len(member.config.channels), member.config.crop_size)
    except ImportError as error:
        print(f"ONNX Runtime fp32: not run here ({error})", flush=True)
        return []
    elapsed = time.perf_counter() - start
    print(f"prepared ONNX Runtime fp32 in {elapsed:.1f} s", flush=True)
    return [Variant("ONNX Runtime fp32", "fp32", elapsed, network=network)]


def study_tiles(weights: Path, pet_path: Path, ct_path: Path, count: int) -> np.ndarray:
    """``count`` network inputs of the study, as a run makes them (train.quantise.calibration_tiles): the batch
    the variants are timed on (random tiles run at another speed: 2.5x faster at fp32 here) and int8's
    calibration."""
    import SimpleITK as sitk

    from train.quantise import calibration_tiles

    return calibration_tiles(weights, [("bench", sitk.ReadImage(str(pet_path)), sitk.ReadImage(str(ct_path)))], count)


def int8_variant(weights: Path, calibration: np.ndarray, keep: list[str]) -> list[Variant]:
    """OpenVINO int8 of the bench's network (train.quantise: NNCF post-training quantisation, calibrated on the
    bench's own study), for its speed: random weights have no masks worth an acceptance check, so this variant
    is timed, never offered (a run's int8 needs a model that passed train.quantise's check)."""
    from model.openvino_backend import compile_network
    from train.quantise import quantise

    start = time.perf_counter()
    try:
        model = quantise(weights, calibration, keep)
    except ImportError as error:
        print(f"OpenVINO int8: not run here ({error})", flush=True)
        return []
    predictor = Predictor.from_path(weights, device="cpu", precision="fp32", backend="torch")
    predictor.networks = [compile_network(model, "int8")]  # the float parts in f32, as train.quantise checks them
    name = f"OpenVINO int8 (NNCF, float: {', '.join(keep) or 'none'})"
    print(f"prepared {name} in {time.perf_counter() - start:.1f} s", flush=True)
    return [Variant(name, "int8", time.perf_counter() - start, predictor=predictor)]


def seconds_per_batch(variant: Variant, tiles: torch.Tensor, rounds: int = 3) -> float:
    """Best of ``rounds`` calls on one batch (after the variant's warm-up), network and its probability only."""
    best = float("inf")
    with torch.inference_mode():
        for _ in range(rounds):
            start = time.perf_counter()
            variant.batch(tiles)
            best = min(best, time.perf_counter() - start)
    return best
