"""The weights format: ``<name>.safetensors`` beside ``<name>.json`` (a ModelConfig).

Loading never unpickles. The JSON records the SHA-256 of its weights file so that a truncated or swapped
file is caught before the network is built. A folder holding several checkpoints is an ensemble.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model.card import ModelCard
from model.config import ModelConfig
from model.errors import InputError, shown
from model.files import atomic_target, atomic_write_json, open_regular
from model.network import build_network

FORMAT = "autopet-unet2d"
FORMAT_VERSION = 1
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass
class Checkpoint:
    config: ModelConfig
    network: torch.nn.Module
    path: Path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path, "weights file") as handle:
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
    atomic_write_json(stem.with_suffix(".json"), document)
    return weights_path


def _non_finite_key(value: Any, where: str = "") -> str | None:
    """The key path of the first NaN or infinity in a parsed JSON document (Python's json reads NaN,
    Infinity and 1e400 as floats), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "the document"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite_key(item, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def read_config(json_path: Path) -> tuple[ModelConfig, str]:
    """The ModelConfig and recorded weights hash of a checkpoint's JSON; a JSON without its hash is refused:
    the hash is what ties the weights to the config and catches a truncated, swapped or tampered file."""
    try:
        with open_regular(Path(json_path), "checkpoint config", "r", encoding="utf-8") as handle:
            document = json.load(handle)
        bad = _non_finite_key(document)
        if bad is not None:  # not JSON, and NaN or infinity in a normalisation gives empty or litre-sized masks
            raise ValueError(f"{bad} is NaN or infinite (not a JSON number)")
        if not isinstance(document, dict):
            raise ValueError(f"a JSON object is expected, got {type(document).__name__}")
        if document.get("format") != FORMAT:
            raise ValueError(f"format is {document.get('format')!r}, expected {FORMAT!r}")
        sha = document.get("weights_sha256")
        if not (isinstance(sha, str) and SHA256_HEX.fullmatch(sha)):
            raise ValueError(f"weights_sha256 is {sha!r}, expected the 64 hex digits of the weights' SHA-256 "
                             "(a checkpoint without its hash is not loaded)")
        if not isinstance(document.get("model"), dict):
            raise ValueError("no 'model' object")
        return ModelConfig.from_dict(document["model"]), sha
    except FileNotFoundError:
        raise InputError(f"{shown(json_path)}: config missing (each .safetensors needs its .json)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{shown(json_path)}: unreadable checkpoint config ({error})") from None
    except (ValueError, KeyError, TypeError, IndexError) as error:
        raise InputError(f"{shown(json_path)}: not a valid checkpoint config: {error}") from None


def load_checkpoint(weights_path: Path, verify_hash: bool = True) -> Checkpoint:
    """Rebuild the network from the JSON and fill it from the safetensors file (strict)."""
    weights_path = Path(weights_path)
    if not weights_path.exists():
        raise InputError(f"{shown(weights_path)}: weights file missing")
    if not weights_path.is_file():  # a FIFO would block the hash's read forever
        raise InputError(f"{shown(weights_path)}: weights file is not a regular file")
    json_path = weights_path.with_suffix(".json")
    config, sha = read_config(json_path)
    if verify_hash and _sha256(weights_path) != sha:
        raise InputError(f"{shown(weights_path)}: weights file is corrupt or not the one its config describes "
                         "(SHA-256 differs)")
    check_encoder_known(config, json_path)
    try:
        state = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"{shown(weights_path)}: unreadable safetensors file: {error}") from None
    try:
        network = build_network(config)
    except (RuntimeError, ValueError, AssertionError) as error:  # e.g. an encoder without feature stages
        raise InputError(f"{shown(json_path)}: cannot build a U-Net on encoder {config.encoder!r}: "
                         f"{str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}"
                         ) from None
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise InputError(f"{shown(weights_path)}: weights do not match their config "
                         f"(encoder {config.encoder}): {first}") from None
    network.eval()
    return Checkpoint(config=config, network=network, path=weights_path)


def find_checkpoints(path: Path) -> list[Path]:
    """The weights files a path names: itself (or its .json's), or every ``*.safetensors`` in a folder (an
    ensemble)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p for p in path.glob("*.safetensors") if not p.name.startswith("."))
        if not found:
            hint = f" (a training run: its best weights are in {shown(path / 'best')})" \
                if any((path / "best").glob("*.safetensors")) else ""
            raise InputError(f"{shown(path)}: no *.safetensors checkpoint in this folder{hint}")
        return found
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    elif path.suffix != ".safetensors":
        # A training run's last.pt or any pickle: never unpickled here, and not silently taken for its .json.
        raise InputError(f"{shown(path)}: not a .safetensors checkpoint (give NAME.safetensors beside NAME.json, "
                         "or a folder of them; .pt/.pth files are not loaded)")
    if not path.exists():
        raise InputError(f"{shown(path)}: weights not found")
    return [path]


def check_encoder_known(config: ModelConfig, json_path: Path) -> None:
    """The encoder must be one this timm builds offline; otherwise one line instead of timm's traceback."""
    import timm  # imported late: slow, and not needed to read a config

    if not timm.is_model(config.encoder):
        raise InputError(f"{shown(json_path)}: unknown encoder {config.encoder!r} (not a model of the installed "
                         f"timm {timm.__version__})")


def load_ensemble(path: Path) -> list[Checkpoint]:
    """Load one checkpoint or all checkpoints of a folder; members must share their input contract."""
    members = [load_checkpoint(p) for p in find_checkpoints(path)]
    for member in members[1:]:
        if not member.config.same_input_contract(members[0].config):
            raise InputError(f"{member.path}: its preprocessing differs from {members[0].path}; "
                             "ensemble members must share normalisation, crop size, spacing and orientation")
    return members


def model_cards(weights: Path) -> dict[str, ModelCard]:
    """The card (what the weights are: model.config.ModelCard) of each checkpoint a path names, by weights file
    name (a folder: an ensemble)."""
    return {path.name: read_config(path.with_suffix(".json"))[0].card for path in find_checkpoints(Path(weights))}


def cards_warning(cards: dict[str, ModelCard]) -> str | None:
    """The line the outputs of these weights carry (each member's purpose warning, once), or None."""
    return "; ".join(dict.fromkeys(card.warning for card in cards.values() if card.warning)) or None


def update_card(json_path: Path, **fields: Any) -> ModelCard:
    """Rewrite a checkpoint's card fields (``held_out`` figures measured after training, say) in its JSON;
    the weights and their hash are untouched. Returns the new card (checked as reading it checks it)."""
    config, _ = read_config(json_path)
    card = ModelCard(**{**dataclasses.asdict(config.card), **fields})
    document = json.loads(Path(json_path).read_text(encoding="utf-8"))
    document["model"]["card"] = dataclasses.asdict(card)
    atomic_write_json(Path(json_path), document)
    return card
