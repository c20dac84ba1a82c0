"""Shared by process.py and train/: the network, its preprocessing, its weights format and inference."""

from model.checkpoint import Checkpoint, load_checkpoint, load_ensemble, save_checkpoint
from model.config import ModelConfig, NormalisationConfig
from model.errors import InputError
from model.inference import CaseTimings, InferenceConfig, Predictor, segment
from model.network import build_network
from model.runner import CaseResult, run_case, run_images

__all__ = [
    "CaseResult",
    "CaseTimings",
    "Checkpoint",
    "InferenceConfig",
    "InputError",
    "ModelConfig",
    "NormalisationConfig",
    "Predictor",
    "build_network",
    "load_checkpoint",
    "load_ensemble",
    "run_case",
    "run_images",
    "save_checkpoint",
    "segment",
]
