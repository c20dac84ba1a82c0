"""The command lines' argument parser and checked argument types, shared by process.py, ``python -m train``
and ``python -m studies.dicom``: every argument is converted and checked by its type while it is parsed, so
that a bad value is one line naming the option and exit 2 before any work, never a traceback later (a
negative seed deep in numpy, an output folder under a regular file when the first study is written).

Light on purpose (argparse, math, pathlib): ``--help`` and argument errors answer before PyTorch is imported.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from model.errors import InputError, shown
from model.validation import PLAUSIBLE_WEIGHT_KG


@dataclass(frozen=True)
class PrecisionEntry:
    """What a precision is: its torch dtype's name (model.devices takes ``getattr(torch, dtype)``, so that this
    module stays free of PyTorch), whether training (FitConfig, ``python -m train``) and inference (process.py's
    --precision) offer it, and whether PyTorch computes in it under autocast (int8 is no autocast dtype: an int8
    model that passed train.quantise's acceptance, on OpenVINO)."""

    dtype: str
    training: bool
    inference: bool = True
    autocast: bool = True


# The precisions, named here alone: adding one is one entry (a light module: process.py's choices are known
# before PyTorch is imported). "auto" is no entry: model.devices gives it its rule, per device.
PRECISION_TABLE: dict[str, PrecisionEntry] = {
    "fp32": PrecisionEntry("float32", training=True),
    "fp16": PrecisionEntry("float16", training=True),
    "bf16": PrecisionEntry("bfloat16", training=True),
    "int8": PrecisionEntry("int8", training=False, autocast=False),
}
# A precision's name as the settings hold it: "auto" or a PRECISION_TABLE key (checked where it is parsed).
Precision = str
InferencePrecision = str


def training_precisions() -> tuple[str, ...]:
    """What a training can ask for: "auto" and the table's training precisions (read when asked, not at import)."""
    return ("auto", *(name for name, entry in PRECISION_TABLE.items() if entry.training))


def inference_precisions() -> tuple[str, ...]:
    """What a run can ask for (--precision): "auto" and the table's inference precisions."""
    return ("auto", *(name for name, entry in PRECISION_TABLE.items() if entry.inference))


# The inference backends (model.backends): PyTorch, or OpenVINO's CPU runtime; "auto" takes the fastest for the
# device and CPU kind (model.devices.AUTO_CPU_RUNTIME).
Backend = Literal["auto", "torch", "openvino"]
BACKENDS: tuple[str, ...] = get_args(Backend)

DEVICE_NAME = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
# A body weight (--weight-kg) a person can have: the one range the study checks hold a DICOM PatientWeight to.
MIN_WEIGHT_KG, MAX_WEIGHT_KG = PLAUSIBLE_WEIGHT_KG
# A seed as numpy's and PyTorch's generators take it (numpy refuses a negative one, deep inside).
MAX_SEED = 2 ** 32 - 1


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one InputError line (argparse prints usage and message, two lines, and exits
    itself); the command line's caller prints it and exits 2."""

    def error(self, message: str) -> None:
        raise InputError(f"{message} (see --help)")


def number(kind: type[int] | type[float], low: float, high: float) -> Callable[[str], int | float]:
    """An argparse type: ``kind`` (int or float) from ``low`` to ``high`` inclusive, finite."""

    def checked(text: str) -> int | float:
        try:
            value = kind(text)
        except (TypeError, ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        # an int is compared as it is: math.isfinite(10**400) raises OverflowError
        if not ((kind is int or math.isfinite(value)) and low <= value <= high):
            shown_bound = (lambda bound: str(int(bound))) if kind is int else (lambda bound: f"{bound:g}")
            written = text if len(text) <= 40 else f"{text[:37]}..."
            raise argparse.ArgumentTypeError(f"{written}: must be a finite number from {shown_bound(low)} to "
                                             f"{shown_bound(high)}")
        return value

    checked.__name__ = kind.__name__
    return checked


def body_weight_kg(text: str) -> float:
    """An argparse type: a body weight in kg, from MIN_WEIGHT_KG to MAX_WEIGHT_KG."""
    return number(float, MIN_WEIGHT_KG, MAX_WEIGHT_KG)(text)


def phantom_size(text: str) -> int:
    """An argparse type: a phantom's in-plane matrix (python -m train synth, train.alpha_experiment)."""
    return number(int, 16, 2048)(text)


def spacing_mm(text: str) -> float:
    """An argparse type: an in-plane spacing in mm, as model.config and the readers accept it."""
    return number(float, 0.4, 20.0)(text)


def thickness_mm(text: str) -> float:
    """An argparse type: a slice spacing in mm, as the readers accept it."""
    return number(float, 0.4, 50.0)(text)


def random_seed(text: str) -> int:
    """An argparse type: a random seed, an integer from 0 to 2**32 - 1."""
    return number(int, 0, MAX_SEED)(text)


def _file_above(path: Path) -> Path | None:
    """The regular file (or other non-folder) that stands where a folder above ``path`` must be, or None.
    Lexical: '..' is not resolved through links."""
    candidate = Path(os.path.abspath(path)).parent
    while not candidate.exists() and candidate != candidate.parent:
        candidate = candidate.parent
    return None if candidate.is_dir() else candidate


def _check_place(path: Path) -> None:
    if (blocking := _file_above(path)) is not None:
        raise argparse.ArgumentTypeError(f"{shown(path)}: lies under {shown(blocking)}, which is a file, not a "
                                         "folder")


def output_folder(text: str) -> Path:
    """An argparse type: a folder to write into, made if missing; refused when it, or a folder it would be made
    in, is a regular file (``--out afile/sub``: NotADirectoryError at the first write otherwise)."""
    path = Path(text)
    _check_place(path)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{shown(path)}: is a file, not a folder")
    return path


def output_file(text: str) -> Path:
    """An argparse type: a file to write; refused when it is a folder or a folder above it is a file."""
    path = Path(text)
    _check_place(path)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{shown(path)}: is a folder, not a file")
    return path


def input_folder(text: str) -> Path:
    """An argparse type: a folder that exists."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{shown(path)}: {'not a folder' if path.exists() else 'folder missing'}")
    return path


def input_file(text: str) -> Path:
    """An argparse type: a regular file that exists."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{shown(path)}: {'not a file' if path.exists() else 'file missing'}")
    return path


def device_name(text: str) -> str:
    """An argparse type: auto, cpu, cuda or cuda:N (whether that GPU exists is the caller's check)."""
    if not DEVICE_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r}: expected auto, cpu, cuda or cuda:N")
    return text
