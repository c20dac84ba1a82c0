"""The device and precision rules (model.devices), stated as tables: none of it depends on the machine's CPU."""

from types import SimpleNamespace

import pytest
import torch

import process
from bench.peak import low_precision
from model.arguments import PRECISION_TABLE, PrecisionEntry, inference_precisions, training_precisions
from model.devices import (
    autocast_dtypes,
    cpu_supports_bf16,
    describe_precision,
    dtype_of,
    precision_rule,
    resolve_device,
    resolve_precision,
)
from model.errors import InputError
from tests.train.test_fit import TINY_RUN
from train.config import FitConfig


@pytest.mark.parametrize(("device", "native_bf16", "training", "dtype", "scaler"), [
    # inference: fp16 on any GPU (the T4 has no bf16), bf16 only on a CPU that has it natively
    ("cuda", False, False, torch.float16, False),
    ("cuda", True, False, torch.float16, False),
    ("cpu", True, False, torch.bfloat16, False),
    ("cpu", False, False, torch.float32, False),
    # training: bf16 on a GPU that has it, else fp16 with a GradScaler; the CPU as for inference
    ("cuda", True, True, torch.bfloat16, False),
    ("cuda", False, True, torch.float16, True),
    ("cpu", True, True, torch.bfloat16, False),
    ("cpu", False, True, torch.float32, False),
    # a device that is not CUDA follows the CPU's rule
    ("meta", True, False, torch.bfloat16, False),
])
def test_auto_precision(device, native_bf16, training, dtype, scaler):
    rule = precision_rule("auto", torch.device(device), training=training, native_bf16=native_bf16)
    assert (rule.dtype, rule.scaler) == (dtype, scaler)


@pytest.mark.parametrize("native_bf16", [False, True])
@pytest.mark.parametrize(("asked", "dtype"), [("fp32", torch.float32), ("fp16", torch.float16),
                                              ("bf16", torch.bfloat16)])
def test_an_explicit_precision_is_taken_as_asked(asked, dtype, native_bf16):
    for device in ("cpu", "cuda"):
        assert resolve_precision(asked, torch.device(device), native_bf16=native_bf16) == dtype
    assert precision_rule(asked, torch.device("cuda"), training=True).scaler == (asked == "fp16")


def test_fp16_training_is_cuda_only():
    with pytest.raises(InputError, match="CUDA only"):
        precision_rule("fp16", torch.device("cpu"), training=True)


@pytest.mark.parametrize(("avx512_bf16", "amx", "expected"), [(False, False, False), (True, False, True),
                                                               (False, True, True)])
def test_cpu_bf16_follows_torchs_probes(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert cpu_supports_bf16() is expected
    assert resolve_precision("auto", torch.device("cpu")) == (torch.bfloat16 if expected else torch.float32)


@pytest.mark.parametrize(("device", "dtype", "asked", "text"), [
    ("cpu", torch.bfloat16, "auto", "cpu, bf16 (auto: the CPU has native bf16)"),
    ("cpu", torch.float32, "auto", "cpu, fp32 (auto: the CPU has no native bf16)"),
    ("cuda:0", torch.float16, "auto", "cuda:0, fp16 (auto: fp16 autocast on CUDA)"),
    ("cpu", torch.float32, "fp32", "cpu, fp32 (as asked)"),
])
def test_describe_precision(device, dtype, asked, text):
    predictor = SimpleNamespace(device=torch.device(device), dtype=dtype, settings=SimpleNamespace(precision=asked))
    assert describe_precision(predictor) == text


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            resolve_device("cuda:1")


def test_the_precisions_are_named_once():
    """model.arguments.PRECISION_TABLE is every caller's list: process.py's choices, the training config's check,
    the dtypes and "auto"'s rule of model.devices, and bench's low precision (auto's, on a device with bf16)."""
    assert training_precisions() == ("auto", "fp32", "fp16", "bf16")
    (action,) = (a for a in process.build_parser()._actions if a.dest == "precision")
    # inference may also ask for int8 (OpenVINO, an accepted int8 model); training may not
    assert tuple(action.choices) == inference_precisions() == (*training_precisions(), "int8")
    with pytest.raises(ValueError, match="got 'int8'"):
        FitConfig(**{**TINY_RUN, "precision": "int8"})
    assert autocast_dtypes() == {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    assert dtype_of("int8") == torch.int8
    for name in training_precisions():
        assert FitConfig(**{**TINY_RUN, "precision": name}).precision == name
    with pytest.raises(ValueError, match=r"one of \['auto', 'fp32', 'fp16', 'bf16'\], got 'fp8'"):
        FitConfig(**{**TINY_RUN, "precision": "fp8"})
    assert low_precision("cpu") == torch.bfloat16 and low_precision("cuda") == torch.float16


@pytest.mark.parametrize(("name", "entry", "dtype"), [
    # an autocast precision that training offers too
    ("fp64", PrecisionEntry("float64", training=True), torch.float64),
    # one that inference alone offers
    ("fp8", PrecisionEntry("float8_e4m3fn", training=False), torch.float8_e4m3fn),
])
def test_a_precision_is_one_entry(monkeypatch, name, entry, dtype):
    """Adding a precision is one PRECISION_TABLE entry: process.py's --precision offers it, FitConfig takes it
    where training offers it, model.devices resolves it to its dtype, and InferenceConfig accepts it."""
    from model.inference import InferenceConfig

    monkeypatch.setitem(PRECISION_TABLE, name, entry)
    (action,) = (a for a in process.build_parser()._actions if a.dest == "precision")
    assert name in action.choices
    assert process.build_parser().parse_args(["--precision", name]).precision == name
    if entry.training:
        assert FitConfig(**{**TINY_RUN, "precision": name}).precision == name
    else:
        with pytest.raises(ValueError, match=f"got '{name}'"):
            FitConfig(**{**TINY_RUN, "precision": name})
    assert dtype_of(name) == dtype and autocast_dtypes()[name] == dtype
    assert resolve_precision(name, torch.device("cpu")) == dtype
    assert InferenceConfig(precision=name).precision == name
