"""The weights format: ``<name>.safetensors`` beside ``<name>.json`` (a ModelConfig).

Loading never unpickles. The JSON records the SHA-256 of its weights file so that a truncated or swapped
file is caught before the network is built. A folder holding several checkpoints is an ensemble.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model.config import ModelConfig
from model.errors import InputError
from model.files import atomic_target, atomic_write_bytes
from model.network import build_network

FORMAT = "autopet-unet2d"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    config: ModelConfig
    network: torch.nn.Module
    path: Path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(network: torch.nn.Module, config: ModelConfig, stem: Path) -> Path:
    """Write ``stem.safetensors`` and ``stem.json``; returns the weights path."""
    stem = Path(stem)
    weights_path = stem.with_suffix(".safetensors")
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in network.state_dict().items()}
    with atomic_target(weights_path) as tmp:
        save_file(state, tmp, metadata={"format": FORMAT})
        sha = _sha256(tmp)
    document = {"format": FORMAT, "format_version": FORMAT_VERSION, "weights_sha256": sha,
                "model": config.to_dict()}
    atomic_write_bytes(stem.with_suffix(".json"), json.dumps(document, indent=2).encode())
    return weights_path


def read_config(json_path: Path) -> tuple[ModelConfig, str | None]:
    """The ModelConfig and recorded weights hash of a checkpoint's JSON."""
    try:
        document = json.loads(Path(json_path).read_text())
        if document.get("format") != FORMAT:
            raise ValueError(f"format is {document.get('format')!r}, expected {FORMAT!r}")
        return ModelConfig.from_dict(document["model"]), document.get("weights_sha256")
    except FileNotFoundError:
        raise InputError(f"{json_path}: config missing (each .safetensors needs its .json)") from None
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{json_path}: not a valid checkpoint config: {error}") from None


def load_checkpoint(weights_path: Path, verify_hash: bool = True) -> Checkpoint:
    """Rebuild the network from the JSON and fill it from the safetensors file (strict)."""
    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise InputError(f"{weights_path}: weights file missing")
    config, sha = read_config(weights_path.with_suffix(".json"))
    if verify_hash and sha is not None and _sha256(weights_path) != sha:
        raise InputError(f"{weights_path}: weights file is corrupt or not the one its config describes "
                         "(SHA-256 differs)")
    try:
        state = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"{weights_path}: unreadable safetensors file: {error}") from None
    network = build_network(config)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise InputError(f"{weights_path}: weights do not match their config "
                         f"(encoder {config.encoder}): {first}") from None
    network.eval()
    return Checkpoint(config=config, network=network, path=weights_path)


def find_checkpoints(path: Path) -> list[Path]:
    """The weights files a path names: itself, or every ``*.safetensors`` in a folder (an ensemble)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.safetensors"))
        if not found:
            raise InputError(f"{path}: no *.safetensors checkpoint in this folder")
        return found
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if not path.exists():
        raise InputError(f"{path}: weights not found")
    return [path]


def load_ensemble(path: Path) -> list[Checkpoint]:
    """Load one checkpoint or all checkpoints of a folder; members must share their input contract."""
    members = [load_checkpoint(p) for p in find_checkpoints(path)]
    for member in members[1:]:
        if not member.config.same_input_contract(members[0].config):
            raise InputError(f"{member.path}: its preprocessing differs from {members[0].path}; "
                             "ensemble members must share normalisation, crop size and spacing")
    return members
