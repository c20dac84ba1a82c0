"""The network on OpenVINO's CPU runtime: converted from the PyTorch network the checkpoint builds, on load, and
cached on disk so that the next load reads it instead (the checkpoint stays the one source of truth; nothing
is fetched).

Conversion: OpenVINO's PyTorch frontend (what ``openvino.convert_model`` runs for a torch module, without its
usage telemetry, which would send a request from every run) traces the batch-norm-folded network once, with
every input dimension but the channels dynamic (any batch, any window: body windows too). The converted model
keeps fp32 weights (``compress_to_fp16=False``: fp16 weights would move fp32's probabilities); the precision
it runs in is a compile-time hint (f32 or bf16), so one cache entry serves both.

The cache: ``$AUTOPET_CACHE_DIR`` or ``${XDG_CACHE_HOME:-~/.cache}/autopet-wholebody``, in ``openvino/``, one
folder per entry named by a digest of what the converted network depends on (``cache_key``): the model's
identity (model.checkpoint's model_sha256: its config and its weights' SHA-256), what its weights are
(``float``, or an int8 model's own digest), the input shape policy, and the versions of OpenVINO, PyTorch,
timm and segmentation_models_pytorch and of this conversion. An entry is written in a hidden folder and
renamed into place (never read half-written; ranks converting at once keep the first). Where the cache
cannot be written the network is converted in memory, every run. A network without an identity (not loaded
from a checkpoint file) is never cached.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

CACHE_ENV = "AUTOPET_CACHE_DIR"
# Bumped when what is converted changes (batch norm folding, the traced input): old entries are not read again.
CONVERSION_VERSION = 1
# Every input dimension dynamic but the channels: (batch, channels, height, width); -1 is any.
SHAPE_POLICY = "dynamic batch, height and width"
MODEL_FILE = "model.xml"
# A checkpoint's int8 model and its record beside it: NAME.int8.xml, .bin, .json (train.quantise).
INT8_SUFFIX = ".int8"
# The precisions OpenVINO's CPU runtime runs here (its inference precision hint for each); no CPU's fp16.
# int8: an accepted int8 model (train.quantise), its float parts in f32 as its acceptance ran them.
OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def runtime_version() -> str:
    import openvino

    return openvino.get_version().split("-")[0]


def cache_root() -> Path:
    """Where converted networks are kept (see the module)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / "openvino"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "autopet-wholebody" / "openvino"


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def cache_key(identity: str, weights: str = "float") -> dict:
    """What a converted network depends on: the model's identity, its weights' kind, the shape policy and the
    versions of everything that traces and converts it."""
    import openvino

    return {"model_sha256": identity, "weights": weights, "shape": SHAPE_POLICY, "openvino": openvino.get_version(),
            "torch": torch.__version__, "timm": _version("timm"),
            "segmentation_models_pytorch": _version("segmentation_models_pytorch"),
            "conversion": CONVERSION_VERSION}


def cache_entry(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache_root() / f"{key['model_sha256'][:12]}-{key['weights']}-{digest[:16]}"


def convert(network: torch.nn.Module, channels: int, crop: int):  # -> openvino.Model
    """The network (batch norm folded, eval mode) as an OpenVINO model with SHAPE_POLICY's input."""
    import openvino
    from openvino.frontend import FrontEndManager
    from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

    example = torch.zeros(1, channels, crop, crop)
    with torch.no_grad(), warnings.catch_warnings():
        # The trace's notes (Python bools from tensors in timm's padding helpers, constant for a fixed model).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # PyTorch's deprecation of torch.jit.trace, which OpenVINO's frontend calls (its concern, not the run's).
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace", category=FutureWarning)
        decoder = TorchScriptPythonDecoder(network.eval(), example_input=(example,))
        frontend = FrontEndManager().load_by_framework("pytorch")
        model = frontend.convert(frontend.load(decoder))
    model.reshape({0: openvino.PartialShape([-1, channels, -1, -1])})
    return model


def _store(model, key: dict, entry: Path) -> None:
    """Write ``model`` as ``entry`` atomically: a hidden folder beside it, renamed into place."""
    import openvino

    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        openvino.save_model(model, str(staging / MODEL_FILE), compress_to_fp16=False)
        (staging / "key.json").write_text(json.dumps(key, indent=1, sort_keys=True) + "\n")
        # mkdtemp's folder is its owner's alone; the entry is for every user (a container converts as root at
        # build and runs as another user).
        staging.chmod(0o755)
        for path in staging.iterdir():
            path.chmod(0o644)
        try:
            staging.rename(entry)
        except OSError:
            if not (entry / MODEL_FILE).is_file():  # not another process's entry, just written: a real failure
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def converted_model(network: torch.nn.Module, identity: str | None, channels: int, crop: int,
                    weights: str = "float"):  # -> openvino.Model
    """The network as an OpenVINO model: read from the cache where an entry exists, else converted and (for
    a network with an identity) stored there."""
    import openvino

    if identity is None:
        return convert(network, channels, crop)
    key = cache_key(identity, weights)
    entry = cache_entry(key)
    try:
        cached = (entry / MODEL_FILE).is_file()
    except PermissionError as error:  # another user's entry that this one may not read: not this run's to mend
        warnings.warn(f"{entry}: converted network not readable ({error.strerror}); converting it in memory "
                      f"(set {CACHE_ENV} to a folder of this user's)", stacklevel=2)
        return convert(network, channels, crop)
    if cached:
        try:
            return openvino.Core().read_model(str(entry / MODEL_FILE))
        except RuntimeError as error:  # a damaged entry (a disk that filled up): converted and written again
            warnings.warn(f"{entry}: converted network unreadable ({str(error).splitlines()[0]}); converting anew",
                          stacklevel=2)
            shutil.rmtree(entry, ignore_errors=True)
    model = convert(network, channels, crop)
    try:
        _store(model, key, entry)
    except OSError as error:
        warnings.warn(f"{entry.parent}: cannot cache the converted network ({error.strerror or error}); it is "
                      f"converted again on every load (set {CACHE_ENV} to a writable folder)", stacklevel=2)
    return model


def int8_record(weights: Path) -> Path:
    """Where train.quantise writes a checkpoint's int8 model's record (its model beside it, ``.xml``/``.bin``)."""
    stem = weights.with_suffix("")
    return stem.parent / f"{stem.name}{INT8_SUFFIX}.json"


def accepted_int8(weights: Path | None, identity: str | None) -> Path | None:
    """The int8 model of a checkpoint that passed train.quantise's acceptance for this very model (its record
    names this identity), or None."""
    if weights is None or identity is None or not int8_record(weights).is_file():
        return None
    try:
        record = json.loads(int8_record(weights).read_text())
    except (OSError, ValueError):
        return None
    model = int8_record(weights).with_suffix(".xml")
    accepted = isinstance(record, dict) and record.get("passed") is True and record.get("model_sha256") == identity
    return model if accepted and model.is_file() and model.with_suffix(".bin").is_file() else None


class OpenVINONetwork:
    """A compiled OpenVINO model called like the PyTorch network: (N, C, h, w) float32 in, logits out."""

    def __init__(self, compiled) -> None:
        self.compiled = compiled
        self.request = compiled.create_infer_request()

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        outputs = self.request.infer({0: inputs.float().contiguous().numpy()})
        return torch.from_numpy(outputs[0])


def compile_network(model, precision: str, threads: int | None = None) -> OpenVINONetwork:
    """``model`` compiled for the CPU at ``precision`` (OPENVINO_HINTS) with ``threads`` threads
    (None: PyTorch's count, which a torchrun rank has set to its share of the cores). Threads are pinned to cores
    only where the process has every core it may use (ranks sharing a machine would pin onto the same ones)."""
    import openvino

    threads = threads or torch.get_num_threads()
    config = {"INFERENCE_PRECISION_HINT": OPENVINO_HINTS[precision], "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": threads >= len(os.sched_getaffinity(0))}
    return OpenVINONetwork(openvino.Core().compile_model(model, "CPU", config))


def openvino_networks(networks: list[torch.nn.Module], files: list[tuple[str | None, Path]], precision: str,
                      channels: int, crop: int) -> list[OpenVINONetwork]:
    """Each (folded, eval-mode) network converted (or read from the cache) and compiled; at int8, each member's
    accepted int8 model (``files``: each member's identity and checkpoint)."""
    import openvino

    compiled = []
    for network, (identity, weights) in zip(networks, files, strict=True):
        int8 = accepted_int8(weights, identity) if precision == "int8" else None
        model = openvino.Core().read_model(str(int8)) if int8 is not None else \
            converted_model(network, identity, channels, crop)
        compiled.append(compile_network(model, precision))
    return compiled


def main(argv: list[str] | None = None) -> int:
    """``python -m model.openvino_backend WEIGHTS``: convert a checkpoint (or each of a folder's) into the cache
    now (the container's build does, so that its runs read it), printing each entry and what it took."""
    import argparse
    import sys
    import time

    from model.arguments import OneLineParser
    from model.checkpoint import load_ensemble
    from model.errors import InputError, one_line
    from model.network import fold_batch_norm

    parser = OneLineParser(description=main.__doc__)
    parser.add_argument("weights", type=Path, help="a .safetensors checkpoint or a folder of them")
    try:
        args = parser.parse_args(argv)
        for member in load_ensemble(args.weights):
            start = time.perf_counter()
            fold_batch_norm(member.network.eval())  # as model.inference.Predictor converts it
            converted_model(member.network, member.model_sha256, len(member.config.channels), member.config.crop_size)
            entry = cache_entry(cache_key(member.model_sha256))
            print(f"{member.path}: {entry} ({time.perf_counter() - start:.1f} s)", flush=True)
    except (InputError, OSError, argparse.ArgumentError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
