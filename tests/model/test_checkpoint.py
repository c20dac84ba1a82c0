import json

import pytest
import torch

from model import InputError, build_network, load_checkpoint, load_ensemble, save_checkpoint
from model.config import ModelConfig
from tests.conftest import TINY


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
