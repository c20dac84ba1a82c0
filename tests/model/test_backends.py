"""The runtime a run takes (model.backends): auto's pick per CPU kind, stated for every kind (no test depends on
the CPU it runs on having bf16 or AMX), and a choice that cannot run here as one line."""

from __future__ import annotations

import pytest
import torch

import model.backends
import process
from model.arguments import BACKENDS
from model.backends import choose_runtime
from model.devices import AUTO_CPU_RUNTIME, CPU_KINDS, NATIVE_BF16_KINDS, cpu_kind
from model.errors import InputError
from tests.conftest import write_case

CPU = torch.device("cpu")


def test_the_backends_are_named_once_and_every_cpu_kind_has_an_auto_rule():
    (action,) = (a for a in process.build_parser()._actions if a.dest == "backend")
    assert tuple(action.choices) == BACKENDS == ("auto", "torch", "openvino")
    assert set(AUTO_CPU_RUNTIME) == set(CPU_KINDS) and cpu_kind() in CPU_KINDS


@pytest.mark.parametrize("kind", CPU_KINDS)
def test_auto_takes_the_kinds_fastest_backend_and_precision(kind):
    backend, precision = AUTO_CPU_RUNTIME[kind]
    choice = choose_runtime("auto", "auto", CPU, kind=kind)
    assert (choice.backend, choice.precision) == (backend, precision)
    assert kind in choice.why or choice.backend == "torch"
    # bf16 only where the CPU has it natively: emulated bf16 is slower than fp32
    assert precision != "bf16" or kind in NATIVE_BF16_KINDS


@pytest.mark.parametrize(("kind", "precision", "expected"), [
    ("amx", "fp32", ("openvino", "fp32")),          # a precision asked: auto still picks the faster runtime at it
    ("avx2", "bf16", ("torch", "bf16")),            # OpenVINO would run it as f32: PyTorch's emulated bf16, as asked
    ("avx512_bf16", "fp16", ("torch", "fp16")),     # no CPU runtime here has fp16 but PyTorch's
    ("baseline", "fp32", ("torch", "fp32")),
])
def test_auto_at_a_precision_asked(kind, precision, expected):
    choice = choose_runtime("auto", precision, CPU, kind=kind)
    assert (choice.backend, choice.precision) == expected


def test_auto_keeps_pytorch_for_compile_a_gpu_and_without_openvino(monkeypatch):
    assert choose_runtime("auto", "auto", CPU, kind="amx", compile_asked=True).backend == "torch"
    gpu = choose_runtime("auto", "auto", torch.device("cuda"))
    assert (gpu.backend, gpu.precision) == ("torch", "fp16")
    monkeypatch.setattr(model.backends, "openvino_installed", lambda: False)
    choice = choose_runtime("auto", "auto", CPU, kind="avx2")
    assert (choice.backend, choice.precision) == ("torch", "fp32") and "not installed" in choice.why


@pytest.mark.parametrize(("backend", "precision", "device", "kind", "needle"), [
    ("openvino", "auto", "cuda:0", "amx", "--backend openvino runs on the CPU; device cuda:0 is a GPU"),
    ("openvino", "fp16", "cpu", "amx", "--precision fp16 --backend openvino: OpenVINO's CPU runtime runs fp32, "
                                        "bf16, int8"),
    ("openvino", "bf16", "cpu", "avx2", "this CPU (avx2) has no native bf16"),
    ("openvino", "bf16", "cpu", "avx512", "this CPU (avx512) has no native bf16"),
    ("tpu", "auto", "cpu", "amx", "backend 'tpu': expected auto, torch or openvino"),
])
def test_a_choice_that_cannot_run_here_is_one_line(backend, precision, device, kind, needle):
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)")) as raised:
        choose_runtime(backend, precision, torch.device(device), kind=kind)
    assert "\n" not in str(raised.value)


def test_openvino_asked_where_it_is_not_installed_is_one_line(monkeypatch):
    monkeypatch.setattr(model.backends, "openvino_installed", lambda: False)
    with pytest.raises(InputError, match="OpenVINO is not installed"):
        choose_runtime("openvino", "fp32", CPU, kind="avx2")
    with pytest.raises(InputError, match="--compile is PyTorch's"):
        choose_runtime("openvino", "fp32", CPU, kind="avx2", compile_asked=True)


@pytest.mark.parametrize(("extra", "needle"), [
    (["--backend", "onnx"], "argument --backend: invalid choice: 'onnx'"),
    (["--backend", "openvino", "--precision", "fp16"], "--precision fp16 --backend openvino"),
    (["--backend", "openvino", "--compile"], "--compile is PyTorch's torch.compile"),
])
def test_process_refuses_a_backend_it_cannot_run_in_one_line_exit_2(capsys, tmp_path, tiny_weights, small_phantom,
                                                                   extra, needle):
    pet, ct, _ = small_phantom.images()
    write_case(tmp_path, pet, ct)
    code = process.main(["--input", str(tmp_path), "--output", str(tmp_path / "out"), "--weights", str(tiny_weights),
                         "--device", "cpu", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err


@pytest.mark.parametrize(("kind", "backend", "expected"), [
    ("avx512_bf16", "auto", ("openvino", "int8")),
    ("avx512_bf16", "openvino", ("openvino", "int8")),
    ("amx", "auto", ("openvino", "bf16")),   # measured slower than bf16 there: auto keeps bf16
    ("avx2", "auto", ("openvino", "fp32")),  # not measured faster there: auto keeps fp32
])
def test_auto_takes_an_accepted_int8_model_where_it_is_the_faster(kind, backend, expected):
    choice = choose_runtime(backend, "auto", CPU, kind=kind, int8_ready=True)
    assert (choice.backend, choice.precision) == expected
    assert choice.dtype == {"int8": torch.int8, "bf16": torch.bfloat16, "fp32": torch.float32}[expected[1]]


@pytest.mark.parametrize(("backend", "ready", "needle"), [
    ("auto", False, "no int8 model that passed the acceptance check"),
    ("openvino", False, "no int8 model that passed the acceptance check"),
    ("torch", True, "--precision int8 runs on OpenVINO's CPU runtime only"),
])
def test_int8_without_an_accepted_model_or_on_pytorch_is_one_line(backend, ready, needle):
    with pytest.raises(InputError, match=needle):
        choose_runtime(backend, "int8", CPU, kind="amx", int8_ready=ready)
