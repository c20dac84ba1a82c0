import dataclasses
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from model import InputError, build_network, load_checkpoint, load_ensemble, save_checkpoint
from model.checkpoint import Checkpoint, model_sha256, read_config, seal, training_network
from model.config import ModelConfig
from tests.conftest import ROOT, TINY


def test_round_trip_gives_the_same_outputs(tiny_weights):
    loaded = load_checkpoint(tiny_weights)
    assert loaded.config == TINY
    torch.manual_seed(0)
    fresh = build_network(TINY).eval()
    fresh.load_state_dict(loaded.network.state_dict())
    x = torch.randn(2, 2, 64, 64)
    with torch.inference_mode():
        assert torch.equal(loaded.network(x), fresh(x))


def test_config_json_is_self_describing(tiny_weights):
    document = json.loads(tiny_weights.with_suffix(".json").read_text())
    model = document["model"]
    assert model["encoder"] == "regnety_002" and model["channels"] == ["PET_SUV", "CT_HU"]
    assert model["normalisation"]["scheme"] == "fixed" and model["crop_size"] == 64
    assert len(document["weights_sha256"]) == 64


def test_a_folder_is_an_ensemble(tmp_path):
    for seed in (0, 1):
        torch.manual_seed(seed)
        save_checkpoint(build_network(TINY), TINY, tmp_path / f"fold{seed}")
    assert [m.path.name for m in load_ensemble(tmp_path)] == ["fold0.safetensors", "fold1.safetensors"]


def test_ensemble_members_must_share_preprocessing(tmp_path):
    save_checkpoint(build_network(TINY), TINY, tmp_path / "a")
    other = ModelConfig.from_dict({**TINY.to_dict(), "crop_size": 96})
    save_checkpoint(build_network(other), other, tmp_path / "b")
    with pytest.raises(InputError, match="preprocessing differs"):
        load_ensemble(tmp_path)


def test_truncated_weights_are_refused(tmp_path, tiny_weights):
    broken = tmp_path / "tiny.safetensors"
    broken.write_bytes(tiny_weights.read_bytes()[:1000])
    (tmp_path / "tiny.json").write_text(tiny_weights.with_suffix(".json").read_text())
    with pytest.raises(InputError, match="corrupt"):
        load_checkpoint(broken)
    with pytest.raises(InputError, match="unreadable safetensors"):
        load_checkpoint(broken, verify_hash=False)


def test_weights_that_do_not_match_their_config_are_refused(tmp_path, tiny_weights):
    (tmp_path / "tiny.safetensors").write_bytes(tiny_weights.read_bytes())
    document = json.loads(tiny_weights.with_suffix(".json").read_text())
    document["model"]["decoder_channels"] = [64, 32, 16, 8, 8]
    del document["model_sha256"]  # an edited config that does not claim the original's identity
    (tmp_path / "tiny.json").write_text(json.dumps(document))
    with pytest.raises(InputError, match="do not match their config"):
        load_checkpoint(tmp_path / "tiny.safetensors")


def test_missing_config_or_weights(tmp_path, tiny_weights):
    (tmp_path / "lonely.safetensors").write_bytes(tiny_weights.read_bytes())
    with pytest.raises(InputError, match="config missing"):
        load_checkpoint(tmp_path / "lonely.safetensors")
    with pytest.raises(InputError, match="not found"):
        load_ensemble(tmp_path / "nothing.safetensors")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(InputError, match=r"no \*\.safetensors"):
        load_ensemble(empty)


def test_written_files_are_readable_by_others(tiny_weights):
    """mkstemp makes 0600 files; the container's non-root user must still read weights and masks."""
    assert tiny_weights.stat().st_mode & 0o044 == 0o044
    assert tiny_weights.with_suffix(".json").stat().st_mode & 0o044 == 0o044


def tampered(tmp_path, tiny_weights, change=None, document=None) -> Path:
    """A copy of the tiny checkpoint whose JSON document went through ``change``, or is ``document``."""
    (tmp_path / "t.safetensors").write_bytes(tiny_weights.read_bytes())
    if document is None:
        document = json.loads(tiny_weights.with_suffix(".json").read_text())
        change(document)
    (tmp_path / "t.json").write_text(json.dumps(document))
    return tmp_path / "t.safetensors"


@pytest.mark.parametrize("change", [lambda d: d.pop("weights_sha256"), lambda d: d.update(weights_sha256=None),
                                    lambda d: d.update(weights_sha256="abc")])
def test_a_checkpoint_without_its_hash_is_refused(tmp_path, tiny_weights, change):
    with pytest.raises(InputError, match=r"weights_sha256 is .*a checkpoint without its hash is not loaded"):
        load_checkpoint(tampered(tmp_path, tiny_weights, change))


@pytest.mark.parametrize(("document", "needle"), [([], "a JSON object is expected, got list"),
                                                  ("x", "a JSON object is expected, got str"),
                                                  ({}, "format is None")])
def test_a_json_that_is_not_a_checkpoint_config_is_one_line(tmp_path, tiny_weights, document, needle):
    with pytest.raises(InputError, match="not a valid checkpoint config") as error:
        load_checkpoint(tampered(tmp_path, tiny_weights, document=document))
    assert needle in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(("key", "value", "needle"), [
    ("encoder", "no_such_net", "unknown encoder 'no_such_net'"),
    ("encoder", "hf-hub:timm/resnet18.a1_in1k", "no 'hf-hub:' names"),
    ("crop_size", 0, "crop_size must be a positive multiple of 32, got 0"),
    ("crop_size", -64, "crop_size must be a positive multiple of 32, got -64"),
    ("crop_size", 48, "got 48"),
    ("spacing_mm", [0, 0], "spacing_mm must be two positive finite numbers"),
    ("spacing_mm", [-2.0, 2.0], "spacing_mm must be two positive finite numbers"),
    ("decoder_channels", [], "decoder_channels must be 3 to 5 positive integers"),
    ("threshold", "0.5", "threshold must lie in (0, 1)"),
])
def test_bad_model_values_are_refused_before_the_network_is_built(tmp_path, tiny_weights, key, value, needle):
    with pytest.raises(InputError) as error:
        load_checkpoint(tampered(tmp_path, tiny_weights, lambda d: d["model"].update({key: value})))
    assert needle in str(error.value) and "t.json" in str(error.value)


def test_model_config_validates_itself():
    with pytest.raises(ValueError, match="crop_size"):
        ModelConfig(crop_size=0)
    with pytest.raises(ValueError, match="spacing_mm"):
        ModelConfig(spacing_mm=(float("nan"), 2.0))
    assert ModelConfig(encoder="regnety_160.swag_ft_in1k").encoder == "regnety_160.swag_ft_in1k"


def test_a_pickle_is_not_taken_for_a_checkpoint(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"\x80\x04not loaded")
    with pytest.raises(InputError, match=r"last\.pt: not a \.safetensors checkpoint"):
        load_ensemble(tmp_path / "last.pt")


def test_the_shipped_demo_weights_carry_a_matching_hash():
    loaded = load_checkpoint(ROOT / "weights" / "demo.safetensors")
    assert loaded.config.encoder == "regnety_002"


def _normalisation(key, value):
    return lambda d: d["model"].setdefault("normalisation", {}).update({key: value})


@pytest.mark.parametrize(("change", "needle"), [
    (_normalisation("pet_scale", float("nan")), "model.normalisation.pet_scale is NaN or infinite"),
    (_normalisation("pet_clip", float("nan")), "model.normalisation.pet_clip is NaN or infinite"),
    (_normalisation("body_threshold_hu", float("nan")), "body_threshold_hu is NaN"),
    (_normalisation("ct_scale", float("inf")), "model.normalisation.ct_scale is NaN or infinite"),
    (_normalisation("ct_center", -float("inf")), "ct_center is NaN"),
    (_normalisation("ct_clip", [-1000, float("inf")]), "model.normalisation.ct_clip.1 is NaN"),
    (_normalisation("ct_scale", 1e300), "ct_scale must be finite numbers in"),
    (_normalisation("pet_scale", 1e-30), "pet_scale must be finite numbers in"),
    (_normalisation("body_threshold_hu", "-500"), "body_threshold_hu must be finite numbers"),
    (_normalisation("ct_clip", [-1000]), "not a valid checkpoint config"),
    (lambda d: d["model"].update(crop_size=2 ** 20), "crop_size must be finite numbers in [32, 2048]"),
    (lambda d: d["model"].update(spacing_mm=[1e-3, 1e-3]), "spacing_mm must be finite numbers in [0.4, 20]"),
    (lambda d: d["model"].update(spacing_mm=[2.0, float("nan")]), "model.spacing_mm.1 is NaN"),
    (lambda d: d["model"].update(threshold=float("nan")), "model.threshold is NaN"),
    (lambda d: d["model"].update(decoder_channels=[2 ** 40, 16, 16]), "decoder_channels must be finite numbers"),
    (lambda d: d["model"].update(provenance={"dice": float("nan")}), "model.provenance.dice is NaN"),
])
def test_non_finite_and_absurd_config_numbers_are_refused_naming_the_key(tmp_path, tiny_weights, change, needle):
    with pytest.raises(InputError) as error:
        load_checkpoint(tampered(tmp_path, tiny_weights, change))
    assert needle in str(error.value) and "t.json" in str(error.value) and "\n" not in str(error.value)


def test_a_fifo_is_never_opened_as_weights_or_config(tmp_path, tiny_weights):
    import signal

    signal.alarm(30)  # a regression would block on the FIFO: fail instead of hanging the suite
    try:
        path = tampered(tmp_path, tiny_weights, lambda d: None)
        (tmp_path / "t.json").unlink()
        os.mkfifo(tmp_path / "t.json")
        with pytest.raises(InputError, match=r"t\.json: checkpoint config is not a regular file"):
            load_checkpoint(path)
        (tmp_path / "f.json").write_text((tiny_weights.with_suffix(".json")).read_text())
        os.mkfifo(tmp_path / "f.safetensors")
        with pytest.raises(InputError, match=r"f\.safetensors: weights file is not a regular file"):
            load_checkpoint(tmp_path / "f.safetensors")
    finally:
        signal.alarm(0)


class _ConstantLogits(torch.nn.Module):
    """Outputs fixed logits per channel everywhere: the probability a head gives is known exactly."""

    def __init__(self, *logits: float):
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[None, :, None, None].expand(x.shape[0], -1, *x.shape[2:]).clone()


def test_a_checkpoint_says_its_head_and_old_ones_have_the_one_logit_head(tmp_path):
    from model.inference import Predictor

    # A checkpoint written before the field (the shipped one, with its "head" taken out, is one) reads as one logit.
    old = json.loads((ROOT / "weights/demo.json").read_text())
    old["model"].pop("head", None)
    (tmp_path / "old.json").write_text(json.dumps(old))
    shutil.copy(ROOT / "weights/demo.safetensors", tmp_path / "old.safetensors")
    assert read_config(tmp_path / "old.json")[0].head == "one_logit"
    two = dataclasses.replace(TINY, head="two_class_softmax")
    path = save_checkpoint(build_network(two), two, tmp_path / "two")
    assert json.loads(path.with_suffix(".json").read_text())["model"]["head"] == "two_class_softmax"
    assert load_checkpoint(path).config.head == "two_class_softmax"
    # Inference takes the lesion channel of the softmax; an ensemble may mix heads, each member read by its own.
    members = [Checkpoint(two, _ConstantLogits(0.0, 1.0), path), Checkpoint(TINY, _ConstantLogits(-1.0), path)]
    tiles = torch.zeros(1, 2, 64, 64)
    alone = Predictor.from_checkpoints(members[:1], device="cpu", precision="fp32").predict_tiles(tiles)
    assert torch.allclose(alone, torch.full_like(alone, 1 / (1 + math.exp(-1.0))))
    mixed = Predictor.from_checkpoints(members, device="cpu", precision="fp32").predict_tiles(tiles)
    expected = (1 / (1 + math.exp(-1.0)) + 1 / (1 + math.exp(1.0))) / 2
    assert torch.allclose(mixed, torch.full_like(mixed, expected))
    with pytest.raises(ValueError, match="head must be one of"):
        dataclasses.replace(TINY, head="sigmoid")


# --- a model's identity: its config as read and its weights (issue 23) ------------------------------------

DEMO = ROOT / "weights" / "demo.safetensors"
# Edits of a config that change what the model outputs (each measured on the shipped demo: issue 23).
OUTPUT_CHANGING_EDITS = {
    "threshold 0.5 -> 0.01": lambda model: model.update(threshold=0.01),
    "pet_scale 5 -> 0.5": lambda model: model["normalisation"].update(pet_scale=0.5),
    "orientation RAI added": lambda model: model.update(orientation="RAI"),
    "CT clip narrowed": lambda model: model["normalisation"].update(ct_clip=[-200.0, 200.0]),
    "spacing 4.0728 -> 3.0": lambda model: model.update(spacing_mm=[3.0, 3.0]),
}
# Edits that read as the same config: the same model.
SAME_MODEL_EDITS = {
    "orientation LPS (the default) written out": lambda model: model.update(orientation="LPS"),
    "pet_scale 5.0 written 5": lambda model: model["normalisation"].update(pet_scale=5),
    "keys in another order": lambda model: _reversed_in_place(model),
}


def _reversed_in_place(model: dict) -> None:
    items = list(model.items())
    model.clear()
    model.update(reversed(items))


def demo_copy(folder: Path, edit=None, *, keep_identity: bool = True) -> Path:
    """A copy of the shipped demo checkpoint whose config went through ``edit``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DEMO.name).write_bytes(DEMO.read_bytes())
    document = json.loads(DEMO.with_suffix(".json").read_text())
    if edit is not None:
        edit(document["model"])
    if not keep_identity:
        del document["model_sha256"]
    (folder / "demo.json").write_text(json.dumps(document, indent=4))
    return folder / DEMO.name


def test_the_shipped_checkpoint_records_its_identity():
    document = json.loads(DEMO.with_suffix(".json").read_text())
    loaded = load_checkpoint(DEMO)
    assert loaded.model_sha256 == document["model_sha256"] == model_sha256(loaded.config, document["weights_sha256"])
    assert read_config(DEMO.with_suffix(".json"))[1] == document["weights_sha256"]


@pytest.mark.parametrize("edit", OUTPUT_CHANGING_EDITS)
def test_an_edited_config_is_refused_or_another_model_never_the_original(tmp_path, edit):
    shipped = load_checkpoint(DEMO).model_sha256
    with pytest.raises(InputError) as error:
        load_checkpoint(demo_copy(tmp_path / "claimed", OUTPUT_CHANGING_EDITS[edit]))
    message = str(error.value)
    assert "demo.json: its model config differs from the one its model_sha256 records" in message
    assert "python -m model.checkpoint --seal" in message and "\n" not in message
    unclaimed = load_checkpoint(demo_copy(tmp_path / "unclaimed", OUTPUT_CHANGING_EDITS[edit], keep_identity=False))
    assert unclaimed.model_sha256 != shipped  # runs, under an identity of its own
    sealed_path = demo_copy(tmp_path / "sealed", OUTPUT_CHANGING_EDITS[edit])
    before, identity = seal(sealed_path.with_suffix(".json"))
    sealed = load_checkpoint(sealed_path)
    assert before == shipped and sealed.model_sha256 == identity != shipped
    assert sealed.config.provenance["derived_from"] == shipped


@pytest.mark.parametrize("edit", SAME_MODEL_EDITS)
def test_an_edit_that_reads_as_the_same_config_is_the_same_model(tmp_path, edit):
    assert load_checkpoint(demo_copy(tmp_path, SAME_MODEL_EDITS[edit])).model_sha256 == \
        load_checkpoint(DEMO).model_sha256


def test_the_identity_covers_the_weights(tmp_path, tiny_weights):
    torch.manual_seed(1)
    other = save_checkpoint(build_network(TINY), TINY, tmp_path / "tiny")
    assert load_checkpoint(other).model_sha256 != load_checkpoint(tiny_weights).model_sha256


def test_sealing_refuses_weights_that_are_not_the_configs(tmp_path):
    path = demo_copy(tmp_path, OUTPUT_CHANGING_EDITS["threshold 0.5 -> 0.01"])
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(InputError, match="SHA-256 differs"):
        seal(path.with_suffix(".json"))


def _saved_checkpoint(tmp_path, config=TINY, seed: int = 3):
    """A trained-looking checkpoint of ``config`` in the weights format: random weights and norm statistics."""
    torch.manual_seed(seed)
    network = build_network(config)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1.0, 1.0)
    return save_checkpoint(network, config, tmp_path / f"start-{seed}" / "model"), network.state_dict()


def test_a_project_checkpoint_starts_training_from_every_one_of_its_weights(tmp_path):
    path, saved = _saved_checkpoint(tmp_path)
    # The input contract may differ (fine-tuning onto another spacing); the network's shape may not.
    other_grid = dataclasses.replace(TINY, spacing_mm=(4.0, 4.0), crop_size=96)
    started = training_network(other_grid, str(path)).state_dict()
    assert set(started) == set(saved)
    assert all(torch.equal(started[key], saved[key]) for key in saved)
    fresh = build_network(TINY).state_dict()
    assert not all(torch.equal(fresh[key], saved[key]) for key in saved if saved[key].is_floating_point())


@pytest.mark.parametrize("change", [{"decoder_channels": (32, 16, 16, 8, 4)}, {"head": "two_class_softmax"},
                                    {"encoder": "regnety_004"}])
def test_a_checkpoint_of_another_network_shape_is_refused_in_one_line(tmp_path, change):
    path, _ = _saved_checkpoint(tmp_path)
    other = dataclasses.replace(TINY, **change)
    key = next(iter(change))
    with pytest.raises(InputError, match=rf"model\.pretrained is a checkpoint of another network .*\({key} ") as caught:
        training_network(other, str(path))
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_a_tampered_checkpoint_is_refused_before_training_starts(tmp_path):
    path, _ = _saved_checkpoint(tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="SHA-256 differs"):
        training_network(TINY, str(path))
