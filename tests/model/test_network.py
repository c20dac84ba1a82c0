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

