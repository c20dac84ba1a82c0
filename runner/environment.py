"""Whether this Python can run the algorithm: the packages a run imports load, and torchvision's compiled
operators exist for the installed torch. A torchvision built for another torch (a CPU torch beside the CUDA
torchvision of PyPI, where the CPU index was unreachable) imports with ``operator torchvision::nms does not
exist``, and timm with it: the first run would end in a 30-line traceback.

``python -m runner.environment`` (bootstrap.sh's last step) exits 1 with one line saying what is wrong and how
to fix it, or 0; process.py calls ``runtime_problem`` before it loads anything heavy.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys

PYTORCH_INDEX = "https://download.pytorch.org/whl"
# What a run imports besides torch and torchvision (requirements.txt).
RUN_MODULES = ("timm", "segmentation_models_pytorch", "safetensors", "SimpleITK", "pydicom")
# Python's import machinery and compiled extensions fail with these (a missing symbol: OSError; a missing
# operator: RuntimeError; a missing function: AttributeError).
IMPORT_FAILURES = (ImportError, OSError, RuntimeError, AttributeError)


def _installed(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _reason(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else 'no message'}"


def pair_fix(torch_version: str) -> str:
    """How to get a torch and a torchvision built for each other, from the index the torch came from."""
    python = sys.executable
    build = torch_version.partition("+")[2]  # "cpu", "cu124", or "" (PyPI's default build)
    if not build:
        return f"{python} -m pip install --force-reinstall torch torchvision"
    return (f"{python} -m pip install --force-reinstall torch torchvision --index-url {PYTORCH_INDEX}/{build} "
            f"(where that index is unreachable, PyPI's default pair: {python} -m pip install --force-reinstall "
            "torch torchvision)")


def runtime_problem() -> str | None:
    """One line naming what a run cannot import and how to fix it, or None when everything loads."""
    try:
        import torch
    except IMPORT_FAILURES as error:
        return f"torch {_installed('torch')} cannot be imported ({_reason(error)}): run ./bootstrap.sh"
    try:
        import torchvision

        torchvision.ops.nms(torch.zeros((1, 4)), torch.zeros(1), 0.5)  # a compiled operator, called
    except IMPORT_FAILURES as error:
        return (f"torchvision {_installed('torchvision')} does not work with torch {torch.__version__} "
                f"({_reason(error)}): they must be built for each other; install the pair from one index: "
                f"{pair_fix(torch.__version__)}")
    for module in RUN_MODULES:
        try:
            importlib.import_module(module)
        except IMPORT_FAILURES as error:
            return f"{module} cannot be imported ({_reason(error)}): run ./bootstrap.sh"
    return None


def main() -> int:
    problem = runtime_problem()
    if problem is None:
        return 0
    print(f"setup: {problem}", file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
