"""Shared by process.py and train/: the network, its preprocessing, its weights format and inference.

The names below load on first use (PEP 562), so that ``import model.errors`` and a command line's --help
answer without importing PyTorch (seconds on a busy machine).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_HOMES = {
    "Checkpoint": "model.checkpoint", "load_checkpoint": "model.checkpoint", "load_ensemble": "model.checkpoint",
    "save_checkpoint": "model.checkpoint", "ModelConfig": "model.config", "NormalisationConfig": "model.config",
    "InputError": "model.errors", "CaseTimings": "model.inference", "InferenceConfig": "model.inference",
    "Predictor": "model.inference", "segment": "model.inference", "build_network": "model.network",
    "CaseResult": "model.pipeline", "run_case": "model.pipeline", "run_images": "model.pipeline",
    "run_study": "model.pipeline",
}

__all__ = [  # noqa: RUF022  (kept in _HOMES' order)
    "Checkpoint", "load_checkpoint", "load_ensemble", "save_checkpoint", "ModelConfig", "NormalisationConfig",
    "InputError", "CaseTimings", "InferenceConfig", "Predictor", "segment", "build_network", "CaseResult",
    "run_case", "run_images", "run_study",
]

if TYPE_CHECKING:
    from model.checkpoint import Checkpoint, load_checkpoint, load_ensemble, save_checkpoint
    from model.config import ModelConfig, NormalisationConfig
    from model.errors import InputError
    from model.inference import CaseTimings, InferenceConfig, Predictor, segment
    from model.network import build_network
    from model.pipeline import CaseResult, run_case, run_images, run_study


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
