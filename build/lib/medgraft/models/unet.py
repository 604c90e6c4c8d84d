"""Build the U-Net: an smp decoder on a (pretrained) encoder, with input normalisation inside."""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.encoders._utils import patch_first_conv
from torch import nn

from medgraft.errors import MedgraftError
from medgraft.models.registry import EncoderSpec
from medgraft.models.weights import ResolvedWeights, load_into_encoder


class Segmenter(nn.Module):
    """U-Net taking inputs in [0, 1]; it applies the encoder's mean/std itself.

    Keeping the normalisation in the module means checkpoints, inference and exported models
    can never disagree on it.
    """

    def __init__(
        self, unet: nn.Module, mean: list[float], std: list[float], encoder_name: str = ""
    ) -> None:
        super().__init__()
        self.unet = unet
        self.encoder_name = encoder_name
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
    # smp takes True for timm ("tu-") encoders, whose weights tag is part of the name
    smp_weights = (True if spec.timm_name else weights.source) if download else None
    unet = smp.Unet(
        encoder_name=spec.name,
        encoder_weights=smp_weights,
        in_channels=3,
        classes=arch["classes"],
    )
    if weights is not None:
        load_into_encoder(unet.encoder, weights, spec)
    if arch["in_channels"] != 3:
        pretrained = weights is not None and weights.origin != "random"
        patch_first_conv(unet.encoder, arch["in_channels"], pretrained=pretrained)
    return Segmenter(unet, arch["mean"], arch["std"], encoder_name=spec.name)


def transfer_state(
    model: Segmenter, source_arch: dict, source_state: dict[str, torch.Tensor], part: str
) -> list[str]:
    """Copy an earlier medgraft model's weights into ``model`` (task-to-task transfer).

    ``part="encoder"`` copies the encoder only; ``"all"`` copies encoder and decoder, and the
    segmentation head too when the class count matches (otherwise the head stays freshly
    initialised). Returns the parameter groups that were copied.
    """
    if part not in {"encoder", "all"}:
        raise MedgraftError(f"--init-part must be 'encoder' or 'all', not '{part}'")
    target_arch = {
        "encoder": model.encoder_name,
        "in_channels": int(model.mean.shape[1]),
    }
    for key, value in target_arch.items():
        if source_arch[key] != value:
            raise MedgraftError(
                f"--init-from model has {key} {source_arch[key]!r}, this run needs {value!r}"
            )
    prefixes = ["unet.encoder."]
    if part == "all":
        prefixes.append("unet.decoder.")
        if source_arch["classes"] == model.unet.segmentation_head[0].out_channels:
            prefixes.append("unet.segmentation_head.")
    selected = {k: v for k, v in source_state.items() if k.startswith(tuple(prefixes))}
    own = model.state_dict()
    missing = [k for k in own if k.startswith(tuple(prefixes)) and k not in selected]
    if missing:
        raise MedgraftError(f"--init-from model lacks {len(missing)} weights, e.g. {missing[0]}")
    model.load_state_dict(selected, strict=False)
    return [p.split(".")[1] for p in prefixes]
