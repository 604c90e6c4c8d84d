"""Build the U-Net: an smp decoder on a (pretrained) encoder, with input normalisation inside."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.encoders._utils import patch_first_conv
from torch import nn

from medgraft.errors import MedgraftError
from medgraft.models.registry import EncoderSpec
from medgraft.models.volumetric import (
    VOLUME_DECODER_CHANNELS,
    VOLUME_ENCODER_DEPTH,
    VolumeUnet,
    convert_to_3d,
)
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
        self.dims = 3 if isinstance(unet, VolumeUnet) else 2

    @property
    def encoder(self) -> nn.Module:
        return self.unet.encoder

    @property
    def output_stride(self) -> int:
        """Input height and width must be multiples of this (the encoder's total stride)."""
        return int(self.unet.encoder.output_stride)

    @property
    def num_classes(self) -> int:
        return int(self.unet.segmentation_head[0].out_channels)

    @property
    def in_channels(self) -> int:
        return int(self.mean.shape[1])

    @property
    def architecture(self) -> Architecture:
        return Architecture(
            encoder=self.encoder_name,
            in_channels=self.in_channels,
            classes=self.num_classes,
            mean=self.mean.flatten().tolist(),
            std=self.std.flatten().tolist(),
            **self._volume_fields(),
        )

    def _volume_fields(self) -> dict:
        if self.dims == 2:
            return {}
        return {
            "dims": 3,
            "conversion": self.unet.conversion,
            "encoder_depth": len(self.unet.encoder.out_channels) - 1,
            "decoder_channels": list(self.unet.decoder_channels),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dims == 3:  # the (1, C, 1, 1) buffers, kept so 2D checkpoints load, for 5D
            return self.unet((x - self.mean[..., None]) / self.std[..., None])
        return self.unet((x - self.mean) / self.std)


def channel_normalization(values: tuple[float, ...], in_channels: int) -> list[float]:
    """Per-channel mean or std for ``in_channels`` inputs (their average when not 3 channels)."""
    if in_channels == len(values):
        return list(values)
    return [sum(values) / len(values)] * in_channels


@dataclass(frozen=True)
class Architecture:
    """Everything needed to rebuild the network later, stored in each checkpoint."""

    encoder: str
    in_channels: int
    classes: int
    mean: list[float]
    std: list[float]
    dims: int = 2
    """2: a 2D U-Net (2D images, 2.5D slices); 3: a 3D U-Net on volumes."""
    conversion: str | None = None
    """3D: how the encoder's 2D kernels were carried into 3D (``models.volumetric``)."""
    encoder_depth: int = 5
    decoder_channels: list[int] | None = None
    """Decoder widths, finest last; None: smp's default for 2D."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Architecture:
        return cls(**values)


def architecture(
    spec: EncoderSpec, in_channels: int, classes: int, conversion: str | None = None
) -> Architecture:
    """The U-Net for ``in_channels`` inputs and ``classes`` outputs on the encoder ``spec``.

    Inputs arrive in [0, 1]; weights trained on another input range (``input_range``, e.g.
    0-255 for some smp encoders) get it folded into the stored mean/std, since
    ``(x * (hi - lo) + lo - mean) / std == (x - (mean - lo) / (hi - lo)) / (std / (hi - lo))``.
    A ``conversion`` makes it a 3D U-Net (:data:`VOLUME_ENCODER_DEPTH`,
    :data:`VOLUME_DECODER_CHANNELS`).
    """
    source = spec.normalization()
    low, high = source.input_range
    if not high > low:
        raise MedgraftError(f"encoder {spec.name}: input range {source.input_range} is empty")
    mean = [(m - low) / (high - low) for m in source.mean]
    std = [s / (high - low) for s in source.std]
    return Architecture(
        encoder=spec.name,
        in_channels=in_channels,
        classes=classes,
        mean=channel_normalization(tuple(mean), in_channels),
        std=channel_normalization(tuple(std), in_channels),
        **(
            {}
            if conversion is None
            else {
                "dims": 3,
                "conversion": conversion,
                "encoder_depth": VOLUME_ENCODER_DEPTH,
                "decoder_channels": list(VOLUME_DECODER_CHANNELS),
            }
        ),
    )


def build_segmenter(
    arch: Architecture, spec: EncoderSpec, weights: ResolvedWeights | None = None
) -> Segmenter:
    """Build the U-Net of ``arch`` and load encoder weights.

    The network is built with 3 input channels so ImageNet filters load unchanged; for other
    channel counts smp's ``patch_first_conv`` then adapts the first convolution (summed filters
    for 1 channel, cycled pretrained filters for more), as smp does for its own encoders.
    """
    download = weights is not None and weights.origin == "download"
    # smp takes True for timm ("tu-") encoders, whose weights tag is part of the name
    smp_weights = (True if spec.timm_name else weights.source) if download else None
    decoder = {"decoder_channels": arch.decoder_channels} if arch.decoder_channels else {}
    unet = smp.Unet(
        encoder_name=spec.name,
        encoder_weights=smp_weights,
        encoder_depth=arch.encoder_depth,
        in_channels=3,
        classes=arch.classes,
        **decoder,
    )
    if weights is not None:
        load_into_encoder(unet.encoder, weights, spec)
    if arch.in_channels != 3:
        pretrained = weights is not None and weights.origin != "random"
        patch_first_conv(unet.encoder, arch.in_channels, pretrained=pretrained)
    if arch.dims == 3:  # the 2D encoder, its weights loaded, carried into 3D; a 3D decoder
        encoder = convert_to_3d(unet.encoder, arch.conversion)
        unet = VolumeUnet(encoder, arch.classes, arch.conversion, tuple(arch.decoder_channels))
    return Segmenter(unet, arch.mean, arch.std, encoder_name=spec.name)


def require_same_input(source: Architecture, target: Architecture) -> None:
    """An earlier model can seed this one only with the same encoder and input channels."""
    for key in ("encoder", "in_channels", "dims"):
        theirs, ours = getattr(source, key), getattr(target, key)
        if theirs != ours:
            raise MedgraftError(f"--init-from model has {key} {theirs!r}, this run needs {ours!r}")


def transfer_state(model: Segmenter, source: Segmenter, part: str) -> list[str]:
    """Copy an earlier medgraft model's weights into ``model`` (task-to-task transfer).

    ``part="encoder"`` copies the encoder only; ``"all"`` copies encoder and decoder, and the
    segmentation head too when the class count matches (otherwise the head stays freshly
    initialised). Returns the parameter groups that were copied.
    """
    if part not in {"encoder", "all"}:
        raise MedgraftError(f"--init-part must be 'encoder' or 'all', not '{part}'")
    require_same_input(source.architecture, model.architecture)
    prefixes = ["unet.encoder."]
    if part == "all":
        prefixes.append("unet.decoder.")
        if source.num_classes == model.num_classes:
            prefixes.append("unet.segmentation_head.")
    source_state = source.state_dict()
    selected = {k: v for k, v in source_state.items() if k.startswith(tuple(prefixes))}
    own = model.state_dict()
    missing = [k for k in own if k.startswith(tuple(prefixes)) and k not in selected]
    if missing:
        raise MedgraftError(f"--init-from model lacks {len(missing)} weights, e.g. {missing[0]}")
    model.load_state_dict(selected, strict=False)
    return [p.split(".")[1] for p in prefixes]
