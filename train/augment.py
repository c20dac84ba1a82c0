"""Batch augmentation on the training device (kornia): image and mask go through the same warp."""

from __future__ import annotations

import torch


def build_augmentation() -> torch.nn.Module:
    """Flips, affine (scale 0.75 to 1.25, rotation +-45 deg, translation, shear) and contrast, as the seed."""
    import kornia.augmentation as K

    return K.AugmentationSequential(
        K.RandomHorizontalFlip(p=0.5),
        K.RandomVerticalFlip(p=0.5),
        K.RandomAffine(degrees=45.0, translate=(0.1, 0.1), scale=(0.75, 1.25), shear=10.0, p=0.7,
                       padding_mode="reflection"),
        # Intensity changes apply to the image only; normalised inputs are scaled around 0.
        K.RandomContrast(contrast=(0.8, 1.2), clip_output=False, p=0.5),
        data_keys=["input", "mask"],
    )


def augment(aug: torch.nn.Module, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    image, mask = aug(image, mask)
    return image, (mask > 0.5).to(image.dtype)
