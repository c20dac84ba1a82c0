"""Dice + Lovasz hinge + BCE, combined with learned uncertainty weights (Kendall et al. 2018).

total = sum_i 0.5 / s_i^2 * L_i + log(1 + s_i^2), with s_i learned and initialised to 1.
The Dice term is a batch-level soft Dice with smoothing: unlike smp's DiceLoss, which returns 0 on a batch
without foreground, it still penalises predicted foreground on whole-body slices without lesions.
"""

from __future__ import annotations

import torch
from segmentation_models_pytorch.losses import LovaszLoss
from segmentation_models_pytorch.losses._functional import soft_dice_score

TERMS = ("dice", "lovasz", "bce")


class UncertaintyWeightedLoss(torch.nn.Module):
    def __init__(self, smooth: float = 1.0):
        super().__init__()
        self.s = torch.nn.Parameter(torch.ones(len(TERMS)))
        self.smooth = smooth
        self.lovasz = LovaszLoss(mode="binary", per_image=False, from_logits=True)

    def terms(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, target = logits.float(), target.float()
        prob = torch.sigmoid(logits)
        dice = 1.0 - soft_dice_score(prob.reshape(-1), target.reshape(-1), smooth=self.smooth)
        return {"dice": dice, "lovasz": self.lovasz(logits, target),
                "bce": torch.nn.functional.binary_cross_entropy_with_logits(logits, target)}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        terms = self.terms(logits, target)
        variance = self.s.float() ** 2
        total = sum(0.5 / variance[k] * terms[name] + torch.log1p(variance[k]) for k, name in enumerate(TERMS))
        return total, {name: float(value.detach()) for name, value in terms.items()}
