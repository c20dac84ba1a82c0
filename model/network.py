"""The network: a U-Net (segmentation_models_pytorch) over a timm encoder, built from a ModelConfig."""

from __future__ import annotations

import itertools
import pickle
import socket
import urllib.error
import urllib.parse
from pathlib import Path
from typing import Any

import torch

from model.config import HEADS, ModelConfig
from model.errors import InputError

# Training's encoder initialisation (the training config's model.pretrained): random, timm's ImageNet
# weights, or a local weights file of the timm encoder.
IMAGENET = "imagenet"
PRETRAINED_SUFFIXES = (".safetensors", ".pth", ".bin")
HUB_PROBE_TIMEOUT_S = 5.0


def _unet(config: ModelConfig, **encoder: Any) -> torch.nn.Module:
    import segmentation_models_pytorch as smp  # imported late: it is slow and not needed to read configs

    return smp.Unet(
        encoder_name=f"tu-{config.encoder}",
        encoder_depth=len(config.decoder_channels),
        decoder_channels=list(config.decoder_channels),
        in_channels=len(config.channels),
        classes=HEADS[config.head],
        **encoder,
    )


def foreground_probability(logits: torch.Tensor, head: str) -> torch.Tensor:
    """(N, h, w) lesion probability of a network's (N, C, h, w) output under its head (model.config.HEADS): the
    sigmoid of the one logit, or the lesion channel of the two-class softmax."""
    if head == "two_class_softmax":
        return torch.softmax(logits, dim=1)[:, 1]
    return torch.sigmoid(logits[:, 0])


def build_network(config: ModelConfig) -> torch.nn.Module:
    """A U-Net with the timm encoder named in ``config``, two input channels and the outputs of its head.

    Random weights, never a download: the checkpoint fills every tensor (inference) or training starts
    from build_training_network.
    """
    return _unet(config, encoder_weights=None)


def build_training_network(config: ModelConfig, pretrained: str | None) -> torch.nn.Module:
    """The network training starts from: ``pretrained`` None (random), "imagenet" (timm's ImageNet weights of
    the encoder, through its hub) or the path of a local weights file of the timm encoder (.safetensors, or
    .pth/.bin read with weights_only=True). The 3-channel stem is adapted to the 2 input channels by
    timm's own rule (timm.models.adapt_input_conv): its first two input channels, scaled by 3/2. A checkpoint
    of this project as the start (fine-tuning) is model.checkpoint.training_network's.
    """
    if pretrained is None:
        return build_network(config)
    if pretrained == IMAGENET:
        return _imagenet_network(config)
    path = Path(pretrained)
    if path.suffix not in PRETRAINED_SUFFIXES or not path.is_file():
        raise InputError(f"model.pretrained {pretrained!r}: expected null, \"imagenet\" or an existing weights file "
                         f"({', '.join(PRETRAINED_SUFFIXES)})")
    from safetensors import SafetensorError

    try:
        # timm loads the file as its own pretrained weights: .safetensors directly, others with
        # torch.load(weights_only=True); then adapts the stem and loads strictly.
        return _unet(config, encoder_weights=True, pretrained_cfg_overlay={"file": str(path)})
    except (SafetensorError, pickle.UnpicklingError, EOFError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path}: model.pretrained is not a weights file of the timm encoder {config.encoder}: "
                         f"{first}") from None


def _imagenet_network(config: ModelConfig) -> torch.nn.Module:
    """timm's ImageNet weights; offline (and not in the hub's cache) a one-line InputError, at once."""
    import timm
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    if not timm.models.is_model_pretrained(config.encoder):
        raise InputError(f"model.pretrained \"imagenet\": timm has no pretrained weights for {config.encoder}")
    offline = (f"model.pretrained \"imagenet\": cannot fetch the {config.encoder} ImageNet weights (offline or hub "
               "unreachable); give a local file instead: --set model.pretrained=/path/to/"
               f"{config.encoder}.safetensors (saved from timm.create_model('{config.encoder}', "
               "pretrained=True).state_dict() on a machine with internet)")
    source = timm.models.get_pretrained_cfg(config.encoder)
    hub_id = source.hf_hub_id if source is not None else None
    cached = hub_id is not None and any(
        isinstance(try_to_load_from_cache(hub_id, name), str) for name in ("model.safetensors", "pytorch_model.bin"))
    if not cached and not constants.HF_HUB_OFFLINE:
        # The hub's client retries a dead connection for about a minute; one short probe says it at once.
        where = urllib.parse.urlparse(constants.ENDPOINT if hub_id else source.url)
        port = where.port or (80 if where.scheme == "http" else 443)
        try:
            socket.create_connection((where.hostname, port), timeout=HUB_PROBE_TIMEOUT_S).close()
        except OSError:
            raise InputError(offline) from None
    try:
        return _unet(config, encoder_weights=True)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, urllib.error.URLError, ConnectionError,
            TimeoutError):
        raise InputError(offline) from None


def _fold_into_conv(conv: torch.nn.Conv2d, norm: torch.nn.BatchNorm2d) -> None:
    """conv's weight and bias absorb norm's eval-mode map y = (x - mean) / sqrt(var + eps) * gamma + beta."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    shift = -norm.running_mean * scale
    if norm.affine:
        scale = scale * norm.weight.detach()
        shift = norm.bias.detach() - norm.running_mean * scale
    with torch.no_grad():
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype))
        if conv.bias is None:
            conv.bias = torch.nn.Parameter(shift.to(conv.weight.dtype), requires_grad=False)
        else:
            conv.bias.copy_(conv.bias * scale + shift)


def fold_batch_norm(network: torch.nn.Module) -> int:
    """Fold every batch norm that directly follows a convolution into it, for inference; returns the count.

    In eval mode a batch norm is a per-channel affine map, so the convolution's weights and bias can carry
    it: one operator less per layer. torch.fx fusion finds nothing here because timm's BatchNormAct2d is
    one module (norm, dropout, activation): it is folded by hand and its dropout and activation stay;
    smp's Conv2dReLU loses its BatchNorm2d. Residual activations (timm RegNet's act3, whose input is the
    fresh sum with the shortcut) then run in place. The network must be in eval mode; it is changed in place.
    """
    from timm.layers import BatchNormAct2d, ConvNormAct
    from timm.models.regnet import Bottleneck

    def foldable(conv: torch.nn.Module, norm: torch.nn.Module) -> bool:
        return (isinstance(conv, torch.nn.Conv2d) and isinstance(norm, torch.nn.BatchNorm2d)
                and norm.running_mean is not None and norm.num_features == conv.out_channels)

    def without_norm(norm: torch.nn.BatchNorm2d) -> torch.nn.Module:
        if isinstance(norm, BatchNormAct2d):
            return torch.nn.Sequential(norm.drop, norm.act)
        return torch.nn.Identity()

    if network.training:
        raise ValueError("fold_batch_norm needs a network in eval mode (folding freezes the running statistics)")
    folded = 0
    for module in list(network.modules()):
        if isinstance(module, ConvNormAct) and foldable(module.conv, module.bn):
            _fold_into_conv(module.conv, module.bn)
            module.bn = without_norm(module.bn)
            folded += 1
        elif isinstance(module, torch.nn.Sequential):
            children = list(module.named_children())
            for (_, conv), (name, norm) in itertools.pairwise(children):
                if foldable(conv, norm):
                    _fold_into_conv(conv, norm)
                    setattr(module, name, without_norm(norm))
                    folded += 1
        elif isinstance(module, Bottleneck) and isinstance(module.act3, torch.nn.ReLU):
            module.act3.inplace = True
    return folded
