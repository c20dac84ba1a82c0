"""Dice + Lovasz hinge + BCE, combined with learned uncertainty weights (Kendall et al. 2018).

total = sum_i 0.5 / s_i^2 * L_i + log(1 + s_i^2), with s_i learned and initialised to 1.

The Dice term has two forms (DICE_FORMS, the training config's ``dice``):

``foreground_batch`` (this project's): soft Dice of the foreground over the whole batch, smoothing 1 in smp's
soft_dice_score, which adds it as (I + 1) / (I + (FP + FN) / 2 + 1) = (2 I + 2) / (P + G + 2). Unlike
smp's DiceLoss, which returns 0 on a batch without foreground, it still penalises predicted foreground on
whole-body slices without lesions, and one batch-level ratio is stable when most slices are lesion-free.

``two_class_per_sample`` (the seed's published training code, ZZZsn/MICCAI2022-autopet
PETCT_train_v2/petct_solver.py: SoftDiceLoss on the softmax of a 2-channel head against the one-hot target,
smoothing 1e-5): per sample and per class (background, foreground) (2 I + smooth) / (P + G + smooth), the
loss 1 minus its mean over samples and both classes. On our 1-logit head the background probability is
1 - p: a 2-logit softmax is exactly the sigmoid of the logits' difference, so this is the seed's Dice of the
same predictions; on the two-class head (below) it is their SoftDiceLoss (utils/evaluation.py) exactly.

The head (model.config.HEADS) decides how Lovasz and BCE see the output. ``one_logit``: the Lovasz hinge over
the batch and BCE on the one logit. ``two_class_softmax``, as the seed's solver computed them
(PETCT_train_v2/petct_solver.py): each image's two channels of logits flattened into one vector against the
one-hot target, the Lovasz hinge per image (their lovasz_hinge's default) and BCE with logits over both
channels; the Dice on the softmax.
"""

from __future__ import annotations

import torch
from segmentation_models_pytorch.losses import LovaszLoss
from segmentation_models_pytorch.losses._functional import soft_dice_score

from model.config import DEFAULT_HEAD, HEADS
from model.network import foreground_probability

TERMS = ("dice", "lovasz", "bce")
# The loss terms as the training log names them (metrics.csv, TensorBoard, the console): losses, so that
# ``loss_dice`` 0.99 is not read as a Dice beside the validation metric ``val_dice``; ``s_loss_*`` their
# learned uncertainties.
LOSS_NAMES = tuple(f"loss_{name}" for name in TERMS)
UNCERTAINTY_NAMES = tuple(f"s_{name}" for name in LOSS_NAMES)
# The names logs written before had (``dice``, ``s_dice``...): read as today's.
OLD_LOG_NAMES = dict(zip((*TERMS, *(f"s_{name}" for name in TERMS)), (*LOSS_NAMES, *UNCERTAINTY_NAMES), strict=True))
DICE_FORMS = ("foreground_batch", "two_class_per_sample")
# The seed's SoftDiceLoss smoothing (see the module docstring); ours is 1.
SEED_DICE_SMOOTH = 1e-5


def two_class_per_sample_dice_loss(prob: torch.Tensor, target: torch.Tensor,
                                   smooth: float = SEED_DICE_SMOOTH) -> torch.Tensor:
    """1 - mean over samples and {background, foreground} of the soft Dice; ``prob`` is P(lesion), (N, 1, H, W)."""
    prob = prob.flatten(1)
    target = target.flatten(1)
    dices = []
    for p, g in ((1.0 - prob, 1.0 - target), (prob, target)):
        intersection = (p * g).sum(dim=1)
        dices.append((2.0 * intersection + smooth) / (p.sum(dim=1) + g.sum(dim=1) + smooth))
    return 1.0 - torch.stack(dices, dim=1).mean()


class UncertaintyWeightedLoss(torch.nn.Module):
    def __init__(self, dice: str = "foreground_batch", smooth: float = 1.0, head: str = DEFAULT_HEAD):
        super().__init__()
        if dice not in DICE_FORMS:
            raise ValueError(f"dice must be one of {list(DICE_FORMS)}, got {dice!r}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {list(HEADS)}, got {head!r}")
        self.s = torch.nn.Parameter(torch.ones(len(TERMS)))
        self.dice, self.smooth, self.head = dice, smooth, head
        # The seed's two-class terms take the Lovasz hinge per image; the one-logit head over the batch.
        self.lovasz = LovaszLoss(mode="binary", per_image=head == "two_class_softmax", from_logits=True)

    def dice_term(self, prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.dice == "two_class_per_sample":
            return two_class_per_sample_dice_loss(prob, target)
        return 1.0 - soft_dice_score(prob.reshape(-1), target.reshape(-1), smooth=self.smooth)

    def terms(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three terms of a batch: ``logits`` (N, C, H, W) with C the head's outputs, ``target`` (N, 1, H, W)."""
        logits, target = logits.float(), target.float()
        prob = foreground_probability(logits, self.head)[:, None]
        if self.head == "two_class_softmax":
            scores = logits.flatten(1)  # per image: background channel, then lesion channel
            onehot = torch.cat((1.0 - target, target), dim=1).flatten(1)
        else:
            scores, onehot = logits, target
        return {"dice": self.dice_term(prob, target), "lovasz": self.lovasz(scores, onehot),
                "bce": torch.nn.functional.binary_cross_entropy_with_logits(scores, onehot)}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted total and each term's value by its log name (``LOSS_NAMES``)."""
        terms = self.terms(logits, target)
        variance = self.s.float() ** 2
        total = sum(0.5 / variance[k] * terms[name] + torch.log1p(variance[k]) for k, name in enumerate(TERMS))
        return total, {f"loss_{name}": float(value.detach()) for name, value in terms.items()}


def with_log_names(row: dict) -> dict:
    """A training log row (metrics.csv) with today's names: a log written before the terms were named as
    losses (``dice``, ``s_dice``) reads as one written now (``loss_dice``, ``s_loss_dice``)."""
    return {OLD_LOG_NAMES.get(key, key): value for key, value in row.items()}
