"""What training and inference share: the network, its config and weights format (checkpoint, card), its
preprocessing, the predictor (inference, devices), the official metrics, and the small utilities these need
(errors, files, arguments, validation, geometry, postprocessing). It imports none of the project's other
packages (studies/, results/, runner/, train/, bench/, phantoms/; tests/test_architecture.py checks).

The names below load on first use (PEP 562), so that ``import model.errors`` and a command line's --help
answer without importing PyTorch (seconds on a busy machine).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_HOMES = {
    "Checkpoint": "model.checkpoint", "load_checkpoint": "model.checkpoint", "load_ensemble": "model.checkpoint",
    "save_checkpoint": "model.checkpoint", "ModelConfig": "model.config", "NormalisationConfig": "model.preprocessing",
    "InputError": "model.errors", "CaseTimings": "model.inference", "InferenceConfig": "model.inference",
    "Predictor": "model.inference", "segment": "model.inference", "build_network": "model.network",
}

__all__ = [  # noqa: RUF022  (kept in _HOMES' order)
    "Checkpoint", "load_checkpoint", "load_ensemble", "save_checkpoint", "ModelConfig", "NormalisationConfig",
    "InputError", "CaseTimings", "InferenceConfig", "Predictor", "segment", "build_network",
]

if TYPE_CHECKING:
    from model.checkpoint import Checkpoint, load_checkpoint, load_ensemble, save_checkpoint
    from model.config import ModelConfig
    from model.errors import InputError
    from model.inference import CaseTimings, InferenceConfig, Predictor, segment
    from model.network import build_network
    from model.preprocessing import NormalisationConfig


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
