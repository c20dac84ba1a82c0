import math

import torch

from train.loss import UncertaintyWeightedLoss


def test_known_answers_at_initialisation():
    loss = UncertaintyWeightedLoss()
    target = torch.zeros(2, 1, 8, 8)
    target[0, 0, 2:5, 2:5] = 1
    perfect = (target * 2 - 1) * 50  # confident and right
    total, terms = loss(perfect, target)
    assert terms["dice"] < 1e-3 and terms["bce"] < 1e-6 and terms["lovasz"] < 1e-6
    # s = 1: each term weighs 0.5 and adds log(2)
    assert math.isclose(float(total.detach()), 0.5 * sum(terms.values()) + 3 * math.log(2), rel_tol=1e-4)


def test_false_positives_on_an_empty_batch_are_penalised_by_every_term():
    loss = UncertaintyWeightedLoss()
    empty = torch.zeros(2, 1, 8, 8)
    _, clean = loss(torch.full_like(empty, -20.0), empty)
    _, noisy = loss(torch.full_like(empty, 5.0), empty)
    assert clean["dice"] < 0.01 and noisy["dice"] > 0.9
    assert noisy["bce"] > clean["bce"] and noisy["lovasz"] > clean["lovasz"]


def test_learned_weights_have_gradients():
    loss = UncertaintyWeightedLoss()
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    total, _ = loss(logits, (torch.rand(2, 1, 8, 8) > 0.7).float())
    total.backward()
    assert loss.s.grad is not None and loss.s.grad.abs().sum() > 0 and logits.grad is not None
