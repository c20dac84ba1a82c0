import math

import pytest
import torch

from train.loss import UncertaintyWeightedLoss, two_class_per_sample_dice_loss


def test_known_answers_at_initialisation():
    loss = UncertaintyWeightedLoss()
    target = torch.zeros(2, 1, 8, 8)
    target[0, 0, 2:5, 2:5] = 1
    perfect = (target * 2 - 1) * 50  # confident and right
    total, terms = loss(perfect, target)
    assert terms["loss_dice"] < 1e-3 and terms["loss_bce"] < 1e-6 and terms["loss_lovasz"] < 1e-6
    # s = 1: each term weighs 0.5 and adds log(2)
    assert math.isclose(float(total.detach()), 0.5 * sum(terms.values()) + 3 * math.log(2), rel_tol=1e-4)


def test_false_positives_on_an_empty_batch_are_penalised_by_every_term():
    loss = UncertaintyWeightedLoss()
    empty = torch.zeros(2, 1, 8, 8)
    _, clean = loss(torch.full_like(empty, -20.0), empty)
    _, noisy = loss(torch.full_like(empty, 5.0), empty)
    assert clean["loss_dice"] < 0.01 and noisy["loss_dice"] > 0.9
    assert noisy["loss_bce"] > clean["loss_bce"] and noisy["loss_lovasz"] > clean["loss_lovasz"]


def test_learned_weights_have_gradients():
    loss = UncertaintyWeightedLoss()
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    total, _ = loss(logits, (torch.rand(2, 1, 8, 8) > 0.7).float())
    total.backward()
    assert loss.s.grad is not None and loss.s.grad.abs().sum() > 0 and logits.grad is not None


def test_the_seeds_two_class_per_sample_dice_against_a_hand_computed_value():
    # Sample 0: p = [0.8, 0.2, 0.6, 0.0], g = [1, 0, 1, 0]; sample 1: p = [0.5, 0.5, 0.5, 0.5], g = 0.
    # sample 0 foreground: I = 1.4, P = 1.6, G = 2 -> (2.8 + e) / (3.6 + e); background (1 - p, 1 - g):
    #   1 - p = [0.2, 0.8, 0.4, 1.0], 1 - g = [0, 1, 0, 1]: I = 1.8, P = 2.4, G = 2 -> (3.6 + e) / (4.4 + e)
    # sample 1 foreground: I = 0, P = 2, G = 0 -> e / (2 + e); background: I = 2, P = 2, G = 4 -> (4 + e) / (6 + e)
    e = 1e-5
    dices = [(2.8 + e) / (3.6 + e), (3.6 + e) / (4.4 + e), e / (2 + e), (4 + e) / (6 + e)]
    expected = 1 - sum(dices) / 4  # = 1 - (0.7778 + 0.8182 + 0.0000 + 0.6667) / 4 = 0.4343
    prob = torch.tensor([[0.8, 0.2, 0.6, 0.0], [0.5, 0.5, 0.5, 0.5]]).reshape(2, 1, 2, 2)
    target = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 0]]).reshape(2, 1, 2, 2)
    assert math.isclose(float(two_class_per_sample_dice_loss(prob, target)), expected, rel_tol=1e-6)
    assert math.isclose(expected, 0.43434, abs_tol=1e-4)
    logits = torch.logit(prob.clamp(1e-6, 1 - 1e-6))
    _, terms = UncertaintyWeightedLoss(dice="two_class_per_sample")(logits, target)
    assert math.isclose(terms["loss_dice"], expected, rel_tol=1e-4)
    # Ours on the same batch: one foreground ratio over the batch (I = 1.4, P = 3.6, G = 2); smp's smoothing 1
    # enters its Tversky form (I + 1) / (I + (FP + FN) / 2 + 1), i.e. (2 I + 2) / (P + G + 2).
    _, ours = UncertaintyWeightedLoss()(logits, target)
    assert math.isclose(ours["loss_dice"], 1 - 4.8 / 7.6, rel_tol=1e-4)


def test_an_unknown_dice_form_is_refused():
    with pytest.raises(ValueError, match="dice must be one of"):
        UncertaintyWeightedLoss(dice="per_image")
