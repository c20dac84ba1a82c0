"""Batch-norm folding for inference: same outputs, no norm left, training networks refused."""

import copy
import dataclasses

import pytest
import torch

from model.network import build_network, fold_batch_norm
from tests.conftest import TINY


def _network_with_trained_statistics() -> torch.nn.Module:
    """regnety_002 U-Net whose norms hold non-trivial statistics, as after training (fresh ones are identities)."""
    torch.manual_seed(0)
    network = build_network(TINY)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1.0, 1.0)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return network.eval()


def test_folded_network_matches_the_original():
    network = _network_with_trained_statistics()
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())
    folded = copy.deepcopy(network)
    assert fold_batch_norm(folded) == norms > 40  # encoder's BatchNormAct2d and decoder's BatchNorm2d alike
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 2, 64, 96)
    with torch.inference_mode():
        expected, got = network(x), folded(x)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert (expected - network(torch.randn_like(x))).abs().max() > 1e-2  # the input matters: not vacuous


def test_activations_are_kept_and_residual_ones_run_in_place():
    from timm.models.regnet import Bottleneck

    folded = _network_with_trained_statistics()
    relus_before = sum(isinstance(m, torch.nn.ReLU) for m in folded.modules())
    fold_batch_norm(folded)
    assert sum(isinstance(m, torch.nn.ReLU) for m in folded.modules()) == relus_before
    assert all(m.act3.inplace for m in folded.modules() if isinstance(m, Bottleneck))


def test_a_training_network_is_refused():
    network = build_network(TINY).train()
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norm(network)


def test_the_head_sets_the_outputs_and_the_lesion_probability():
    from model.config import HEADS
    from model.network import foreground_probability

    x = torch.randn(2, 2, 64, 64)
    for head, outputs in HEADS.items():
        network = build_network(dataclasses.replace(TINY, head=head)).eval()
        with torch.no_grad():
            logits = network(x)
        assert logits.shape == (2, outputs, 64, 64)
        probability = foreground_probability(logits, head)
        expected = torch.softmax(logits, 1)[:, 1] if head == "two_class_softmax" else torch.sigmoid(logits[:, 0])
        assert torch.equal(probability, expected)


def _saved_checkpoint(tmp_path, config=TINY, seed: int = 3):
    """A trained-looking checkpoint of ``config`` in the weights format: random weights and norm statistics."""
    from model.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    network = build_network(config)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1.0, 1.0)
    return save_checkpoint(network, config, tmp_path / f"start-{seed}" / "model"), network.state_dict()


def test_a_project_checkpoint_starts_training_from_every_one_of_its_weights(tmp_path):
    from model.network import build_training_network

    path, saved = _saved_checkpoint(tmp_path)
    # The input contract may differ (fine-tuning onto another spacing); the network's shape may not.
    other_grid = dataclasses.replace(TINY, spacing_mm=(4.0, 4.0), crop_size=96)
    started = build_training_network(other_grid, str(path)).state_dict()
    assert set(started) == set(saved)
    assert all(torch.equal(started[key], saved[key]) for key in saved)
    fresh = build_network(TINY).state_dict()
    assert not all(torch.equal(fresh[key], saved[key]) for key in saved if saved[key].is_floating_point())


@pytest.mark.parametrize("change", [{"decoder_channels": (32, 16, 16, 8, 4)}, {"head": "two_class_softmax"},
                                    {"encoder": "regnety_004"}])
def test_a_checkpoint_of_another_network_shape_is_refused_in_one_line(tmp_path, change):
    from model.errors import InputError
    from model.network import build_training_network

    path, _ = _saved_checkpoint(tmp_path)
    other = dataclasses.replace(TINY, **change)
    key = next(iter(change))
    with pytest.raises(InputError, match=rf"model\.pretrained is a checkpoint of another network .*\({key} ") as caught:
        build_training_network(other, str(path))
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_a_tampered_checkpoint_is_refused_before_training_starts(tmp_path):
    from model.errors import InputError
    from model.network import build_training_network

    path, _ = _saved_checkpoint(tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="SHA-256 differs"):
        build_training_network(TINY, str(path))
