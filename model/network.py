"""The network: a U-Net (segmentation_models_pytorch) over a timm encoder, built from a ModelConfig."""

from __future__ import annotations

import os

import torch

from model.config import ModelConfig

# Nothing is ever fetched: the encoder is built with random weights and the checkpoint fills it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_network(config: ModelConfig) -> torch.nn.Module:
    """A U-Net with the timm encoder named in ``config``, two input channels and one output logit."""
    import segmentation_models_pytorch as smp  # imported late: it is slow and not needed to read configs

    return smp.Unet(
        encoder_name=f"tu-{config.encoder}",
        encoder_weights=None,
        encoder_depth=len(config.decoder_channels),
        decoder_channels=list(config.decoder_channels),
        in_channels=len(config.channels),
        classes=1,
    )
