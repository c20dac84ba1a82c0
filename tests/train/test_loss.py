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


def _lovasz_hinge_of_one_image(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Berman et al.'s binary Lovasz hinge of one flat vector, written out here (not smp's code)."""
    signs = 2.0 * labels - 1.0
    errors = 1.0 - scores * signs
    order = torch.argsort(errors, descending=True)
    errors, gt = errors[order], labels[order]
    intersection = gt.sum() - gt.cumsum(0)
    union = gt.sum() + (1.0 - gt).cumsum(0)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1].clone()
    return torch.dot(torch.relu(errors), jaccard)


def test_the_two_class_head_takes_each_term_over_both_channels_as_the_seeds_solver():
    """petct_solver.py: softmax probabilities against the one-hot target for SoftDiceLoss (per sample, per
    class, smooth 1e-5), lovasz_hinge of each image's flattened two channels of logits (per image), BCE with
    logits over both channels. Two batches: lesions in both images, and one image without lesion."""
    torch.manual_seed(0)
    for target in (torch.rand(3, 1, 8, 8) > 0.7, torch.zeros(2, 1, 8, 8, dtype=torch.bool)):
        target = target.float()
        if not target.any():
            target[0, 0, 2:4, 2:4] = 1.0  # one image with a lesion, one without
        logits = 3 * torch.randn(target.shape[0], 2, 8, 8)
        onehot = torch.cat((1 - target, target), dim=1)
        prob = torch.softmax(logits, dim=1)
        e = 1e-5
        dices = [(2 * (prob[:, c] * onehot[:, c]).flatten(1).sum(1) + e)
                 / (prob[:, c].flatten(1).sum(1) + onehot[:, c].flatten(1).sum(1) + e) for c in (0, 1)]
        expected = {
            "dice": float(sum(1 - d.mean() for d in dices) / 2),
            "lovasz": float(torch.stack([_lovasz_hinge_of_one_image(s, g) for s, g in
                                         zip(logits.flatten(1), onehot.flatten(1), strict=True)]).mean()),
            "bce": float(torch.nn.functional.binary_cross_entropy_with_logits(logits, onehot)),
        }
        _, terms = UncertaintyWeightedLoss(dice="two_class_per_sample", head="two_class_softmax")(logits, target)
        for name, value in expected.items():
            assert math.isclose(terms[f"loss_{name}"], value, rel_tol=1e-5), (name, terms[f"loss_{name}"], value)


def test_the_one_logit_head_keeps_its_batch_lovasz_and_an_unknown_head_is_refused():
    torch.manual_seed(1)
    target = (torch.rand(2, 1, 8, 8) > 0.7).float()
    logits = torch.randn(2, 1, 8, 8)
    _, terms = UncertaintyWeightedLoss()(logits, target)
    assert math.isclose(terms["loss_lovasz"], float(_lovasz_hinge_of_one_image(logits.flatten(), target.flatten())),
                        rel_tol=1e-5)
    with pytest.raises(ValueError, match="head must be one of"):
        UncertaintyWeightedLoss(head="three_class")
