"""Build the U-Net: an smp decoder on a (pretrained) encoder, with input normalisation inside."""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.encoders._utils import patch_first_conv
from torch import nn

from medgraft.models.registry import EncoderSpec
from medgraft.models.weights import ResolvedWeights, load_into_encoder


class Segmenter(nn.Module):
    """U-Net taking inputs in [0, 1]; it applies the encoder's mean/std itself.

    Keeping the normalisation in the module means checkpoints, inference and exported models
    can never disagree on it.
    """

    def __init__(self, unet: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.unet = unet
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    @property
    def encoder(self) -> nn.Module:
        return self.unet.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet((x - self.mean) / self.std)


def channel_normalization(values: tuple[float, ...], in_channels: int) -> list[float]:
    """Per-channel mean or std for ``in_channels`` inputs (their average when not 3 channels)."""
    if in_channels == len(values):
        return list(values)
    return [sum(values) / len(values)] * in_channels


def architecture(spec: EncoderSpec, in_channels: int, classes: int) -> dict:
    """Everything needed to rebuild the network later, stored in each checkpoint."""
    source = spec.normalization()
    return {
        "encoder": spec.name,
        "in_channels": in_channels,
        "classes": classes,
        "mean": channel_normalization(source.mean, in_channels),
        "std": channel_normalization(source.std, in_channels),
    }


def build_segmenter(
    arch: dict, spec: EncoderSpec, weights: ResolvedWeights | None = None
) -> Segmenter:
    """Build the U-Net of ``arch`` and load encoder weights.

    The network is built with 3 input channels so ImageNet filters load unchanged; for other
    channel counts smp's ``patch_first_conv`` then adapts the first convolution (summed filters
    for 1 channel, cycled pretrained filters for more), as smp does for its own encoders.
    """
    download = weights is not None and weights.origin == "download"
    unet = smp.Unet(
        encoder_name=spec.name,
        encoder_weights=weights.source if download else None,
        in_channels=3,
        classes=arch["classes"],
    )
    if weights is not None:
        load_into_encoder(unet.encoder, weights, spec)
    if arch["in_channels"] != 3:
        pretrained = weights is not None and weights.origin != "random"
        patch_first_conv(unet.encoder, arch["in_channels"], pretrained=pretrained)
    return Segmenter(unet, arch["mean"], arch["std"])
