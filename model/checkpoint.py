"""The weights format: ``<name>.safetensors`` beside ``<name>.json`` (a ModelConfig).

Loading never unpickles. The JSON records the SHA-256 of its weights file so that a truncated or swapped
file is caught before the network is built, and the model's identity (``model_sha256``: its config as read
and those weights) so that an edited config is refused rather than run under the name of the model it was
copied from. A folder holding several checkpoints is an ensemble.

``python -m model.checkpoint NAME.json`` prints a checkpoint's identity; ``--seal`` records it after a
deliberate edit of the config, which makes the edited config a model of its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import sys
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
from model.network import build_network, build_training_network

FORMAT = "autopet-unet2d"
FORMAT_VERSION = 1
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass
class Checkpoint:
    config: ModelConfig
    network: torch.nn.Module
    path: Path
    # The model's identity (``model_sha256``); None for a network not loaded from a file (training).
    model_sha256: str | None = None


def _canonical(value: Any) -> Any:
    """A config's values with every number a float: 5 and 5.0 read as the same number, so they are one model."""
    if isinstance(value, dict):
        return {str(key): _canonical(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _without_defaults(values: dict, defaults: dict) -> dict:
    """``values`` less every key whose value equals its default (nested dicts compared key by key)."""
    kept = {}
    for key, value in values.items():
        default = defaults.get(key)
        if isinstance(value, dict) and isinstance(default, dict):
            value = _without_defaults(value, default)
            if value:
                kept[key] = value
        elif key not in defaults or value != default:
            kept[key] = value
    return kept


def model_sha256(config: ModelConfig, weights_sha256: str) -> str:
    """A model's identity: the SHA-256 of its config as read and of its weights' SHA-256 (the tensors). The
    config enters as the fields that differ from ModelConfig's defaults (keys sorted, numbers as floats), so a key
    written out with its default value is the same model, and so is a checkpoint written before a field with a
    backwards-compatible default existed (the output head, say). Anything that changes what the model outputs
    changes it: threshold, normalisation, orientation, spacing, crop, head, the weights."""
    model = _without_defaults(_canonical(config.to_dict()), _canonical(ModelConfig().to_dict()))
    document = {"format": FORMAT, "model": model, "weights_sha256": weights_sha256}
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


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
                "model_sha256": model_sha256(config, sha), "model": config.to_dict()}
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
    the hash is what ties the weights to the config and catches a truncated, swapped or tampered file. A
    recorded ``model_sha256`` that is not the identity of the config as read (an edited config) is refused."""
    config, sha, _ = _read_document(json_path)
    return config, sha


def _read_document(json_path: Path, check_identity: bool = True) -> tuple[ModelConfig, str, dict]:
    """read_config's config and weights hash, and the parsed document; the recorded identity checked."""
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
        config = ModelConfig.from_dict(document["model"])
    except FileNotFoundError:
        raise InputError(f"{shown(json_path)}: config missing (each .safetensors needs its .json)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{shown(json_path)}: unreadable checkpoint config ({error})") from None
    except (ValueError, KeyError, TypeError, IndexError) as error:
        raise InputError(f"{shown(json_path)}: not a valid checkpoint config: {error}") from None
    if check_identity:
        _check_identity(json_path, document, config, sha)
    return config, sha, document


def _check_identity(json_path: Path, document: dict, config: ModelConfig, sha: str) -> None:
    """A recorded ``model_sha256`` must be the identity of what was read: otherwise the config was edited after
    the checkpoint was written (a threshold, a normalisation, an orientation...), and its outputs would be
    reported under the identity of the model it was copied from. A checkpoint without one (written before the
    field existed) runs under the identity computed from what is read."""
    recorded = document.get("model_sha256")
    if recorded is None:
        return
    if not (isinstance(recorded, str) and SHA256_HEX.fullmatch(recorded)):
        raise InputError(f"{shown(json_path)}: not a valid checkpoint config: model_sha256 is {recorded!r}, "
                         "expected 64 hex digits")
    if recorded != model_sha256(config, sha):
        raise InputError(f"{shown(json_path)}: its model config differs from the one its model_sha256 records "
                         "(edited after the checkpoint was written); an edited config is another model: to run it "
                         f"as one of its own, record its identity with python -m model.checkpoint --seal "
                         f"{shown(json_path)}")


def load_checkpoint(weights_path: Path, verify_hash: bool = True) -> Checkpoint:
    """Rebuild the network from the JSON and fill it from the safetensors file (strict)."""
    weights_path = Path(weights_path)
    if not weights_path.exists():
        raise InputError(f"{shown(weights_path)}: weights file missing")
    if not weights_path.is_file():  # a FIFO would block the hash's read forever
        raise InputError(f"{shown(weights_path)}: weights file is not a regular file")
    json_path = weights_path.with_suffix(".json")
    config, sha, document = _read_document(json_path, check_identity=False)
    if verify_hash and _sha256(weights_path) != sha:
        raise InputError(f"{shown(weights_path)}: weights file is corrupt or not the one its config describes "
                         "(SHA-256 differs)")
    check_encoder_known(config, json_path)
    _check_identity(json_path, document, config, sha)  # after the checks that name a more specific problem
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
    return Checkpoint(config=config, network=network, path=weights_path, model_sha256=model_sha256(config, sha))


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
    the weights and their hash are untouched. The card is part of the config, so a recorded identity
    (``model_sha256``) is recorded anew: the trainer's own edit, not one to refuse. Returns the new card
    (checked as reading it checks it)."""
    config, sha = read_config(json_path)
    card = ModelCard(**{**dataclasses.asdict(config.card), **fields})
    document = json.loads(Path(json_path).read_text(encoding="utf-8"))
    document["model"]["card"] = dataclasses.asdict(card)
    if "model_sha256" in document:
        document["model_sha256"] = model_sha256(dataclasses.replace(config, card=card), sha)
    atomic_write_json(Path(json_path), document)
    return card


def seal(json_path: Path) -> tuple[str | None, str]:
    """Record in a checkpoint's JSON the identity of its config as it reads now: what a deliberate edit of the
    config needs to run, as a model of its own. The weights must still be the ones the JSON names (SHA-256);
    the identity recorded before, if it differs, goes into the provenance as ``derived_from``. Returns (the
    identity recorded before or None, the new one)."""
    json_path = Path(json_path)
    config, sha, document = _read_document(json_path, check_identity=False)
    weights_path = json_path.with_suffix(".safetensors")
    if _sha256(weights_path) != sha:
        raise InputError(f"{shown(weights_path)}: weights file is corrupt or not the one its config describes "
                         "(SHA-256 differs): not sealed")
    before = document.get("model_sha256")
    before = before if isinstance(before, str) and SHA256_HEX.fullmatch(before) else None
    model = dict(document["model"])  # written back as it was, keys left out stay out (defaults)
    if before is not None and before != model_sha256(config, sha):
        model["provenance"] = {**config.provenance, "derived_from": before}
        config = ModelConfig.from_dict(model)
    identity = model_sha256(config, sha)
    kept = {key: value for key, value in document.items() if key not in ("model_sha256", "model")}
    atomic_write_json(json_path, {**kept, "model_sha256": identity, "model": model})
    return before, identity


def network_shape(config: ModelConfig) -> dict[str, Any]:
    """What decides a network's tensors: two configs with the same shape can load each other's weights."""
    return {"encoder": config.encoder, "decoder_channels": list(config.decoder_channels),
            "channels": list(config.channels), "head": config.head}


def is_project_checkpoint(path: Path) -> bool:
    """A .safetensors whose .json beside it is in this project's weights format (FORMAT),
    rather than a timm encoder's weights file."""
    sidecar = path.with_suffix(".json")
    if path.suffix != ".safetensors" or not sidecar.is_file():
        return False
    try:
        document = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(document, dict) and document.get("format") == FORMAT


def _checkpoint_network(config: ModelConfig, path: Path) -> torch.nn.Module:
    """A network of ``config`` holding every weight of the checkpoint at ``path`` (its hash checked); the two
    must have one network shape. The checkpoint's input contract (normalisation, spacing, crop) may differ:
    fine-tuning onto another is the config's choice, and the run's own config is what it records."""
    checkpoint = load_checkpoint(path)
    theirs, ours = network_shape(checkpoint.config), network_shape(config)
    if theirs != ours:
        differ = ", ".join(f"{key} {theirs[key]} against {ours[key]}" for key in ours if theirs[key] != ours[key])
        raise InputError(f"{shown(path)}: model.pretrained is a checkpoint of another network than this config's "
                         f"({differ}): fine-tuning starts from a checkpoint of the same encoder, decoder and head")
    network = build_network(config)
    network.load_state_dict(checkpoint.network.state_dict(), strict=True)
    return network


def training_network(config: ModelConfig, pretrained: str | None) -> torch.nn.Module:
    """The network a fit starts from: model.network.build_training_network's (random, ImageNet, a timm encoder
    file), or, where ``pretrained`` is the .safetensors of a checkpoint in this format (its .json beside it),
    every weight of that checkpoint: fine-tuning a trained model (the demo's, a fold's) on more or other
    studies."""
    if pretrained is not None and is_project_checkpoint(Path(pretrained)):
        return _checkpoint_network(config, Path(pretrained))
    return build_training_network(config, pretrained)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m model.checkpoint",
                                     description="Print a checkpoint's identity (model_sha256: its config as read "
                                                 "and its weights); --seal records it after a deliberate edit.")
    parser.add_argument("configs", nargs="+", type=Path, metavar="NAME.json")
    parser.add_argument("--seal", action="store_true", help="record the identity of the config as it reads now")
    args = parser.parse_args(argv)
    try:
        for path in args.configs:
            if args.seal:
                before, identity = seal(path)
                print(f"{shown(path)}: model_sha256 {identity}" + (f" (was {before})" if before not in (None, identity)
                                                                      else ""))
            else:
                config, sha, document = _read_document(path, check_identity=False)
                identity, recorded = model_sha256(config, sha), document.get("model_sha256")
                state = "recorded" if recorded == identity else "not recorded" if recorded is None else \
                    f"differs from the recorded {recorded}: the config was edited"
                print(f"{shown(path)}: model_sha256 {identity} ({state})")
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
