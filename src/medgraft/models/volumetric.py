"""Carry a pretrained 2D encoder into 3D, exactly, and put a 3D U-Net decoder on it.

No library loads ImageNet weights into a 3D encoder: smp is 2D, and MONAI's ``FlexibleUNet``
builds 3D EfficientNets but loads ImageNet weights only for ``spatial_dims=2``. Two published
ways carry 2D kernels into 3D, both written here as module surgery on smp's (timm's) encoder:

* **ACS** (Yang et al., IEEE JBHI 2021): each convolution's output channels are split into three
  groups acting as axial, coronal and sagittal kernels (a k x k kernel with depth 1 along one
  axis). The PyPI package ``acsconv`` does this for ``nn.Conv2d`` only: it rebuilds the layer
  with static padding, so timm's TF-"same" convolutions (``Conv2dSame``, the padding the
  EfficientNet-Lite weights were trained with) would lose their asymmetric padding, and it
  imports torch internals that moved since its last release (2022). Here each group is the
  original 2D layer itself (a copy holding its share of the channels) applied to the volume
  cut into planes along the group's axis, so padding, stride and depthwise grouping are the
  original's by construction, and every convolution is a 2D one (oneDNN's fast path on a CPU).
* **Inflation** (I3D, Carreira and Zisserman 2017): each k x k kernel repeated k times along
  the slice axis and divided by k, so a volume constant along that axis gives the 2D response.
  The slice axis is padded by repeating the edge slices (zeros would break that identity at
  both ends); the in-plane padding is the original layer's.

Per-channel layers (BatchNorm with its activation, as timm fuses them) see a 5D tensor as 4D by
merging the last two axes: the per-channel statistics are the same numbers.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from monai.networks.nets.flexible_unet import SegmentationHead, UNetDecoder
from timm.layers import Conv2dSame
from torch import nn

from medgraft.config.schema import CONVERSIONS

PLANES = ("axial", "coronal", "sagittal")
"""ACS groups, in channel order: each acts in the plane that spans the other two array axes
(axial: axes 0-1 at each index of axis 2; coronal: axes 0 and 2; sagittal: axes 1-2)."""
VOLUME_ENCODER_DEPTH = 4
"""Encoder stages a 3D U-Net uses: a total stride of 16, not 32, so small structures (a
hippocampus is about 40 x 50 x 40 voxels at 1 mm) are not padded to 64 voxels a side, as
nnU-Net pools a 40 x 56 x 40 hippocampus patch 4 times."""
VOLUME_DECODER_CHANNELS = (128, 64, 32, 16)
"""Half smp's 2D widths: a 3 x 3 x 3 decoder at full resolution dominates a CPU step
(scripts/bench_3d.py)."""


def split_channels(channels: int) -> list[int]:
    """Channels per ACS group: as equal as possible, the first groups taking the remainder."""
    return [channels // 3 + (1 if group < channels % 3 else 0) for group in range(3)]


def _channel_share(conv: nn.Conv2d, start: int, stop: int) -> nn.Conv2d:
    """A copy of ``conv`` (its class, padding and stride) keeping output channels start:stop.

    A depthwise layer keeps the matching input channels too; other grouped layers cannot be
    split by output channel alone.
    """
    share = copy.deepcopy(conv)
    depthwise = conv.groups == conv.in_channels == conv.out_channels
    if conv.groups != 1 and not depthwise:
        raise ValueError(f"cannot split a convolution with {conv.groups} groups into ACS groups")
    share.weight = nn.Parameter(conv.weight.detach()[start:stop].clone())
    if conv.bias is not None:
        share.bias = nn.Parameter(conv.bias.detach()[start:stop].clone())
    share.out_channels = stop - start
    if depthwise:
        share.in_channels = share.groups = stop - start
    return share


def _in_plane(volume: torch.Tensor, conv: nn.Conv2d, plane: int) -> torch.Tensor:
    """``conv`` on every plane of a (N, C, X, Y, Z) volume, the planes cut across spatial axis
    ``2 - plane`` (axial planes stack along Z); that axis is subsampled by the stride, as a
    3D kernel of depth 1 with the same stride would."""
    axis = 4 - plane  # tensor axis the planes stack along
    stride = conv.stride[0]
    moved = volume.movedim(axis, 1)[:, ::stride]  # (N, D, C, A, B)
    n, depth = moved.shape[:2]
    out = conv(moved.reshape(n * depth, *moved.shape[2:]))
    return out.reshape(n, depth, *out.shape[1:]).movedim(1, axis)


class ACSConv(nn.Module):
    """A pretrained 2D convolution as ACS: its output channels in axial, coronal and sagittal
    groups (:data:`PLANES`), each the original layer on planes of that orientation."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.stride[0] != conv.stride[1] or conv.kernel_size[0] != conv.kernel_size[1]:
            raise ValueError("ACS needs square kernels and strides")
        depthwise = conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1
        self.depthwise = depthwise
        sizes = split_channels(conv.out_channels)
        bounds = [sum(sizes[:g]) for g in range(4)]
        self.groups = nn.ModuleList(
            _channel_share(conv, bounds[g], bounds[g + 1]) for g in range(3)
        )
        self.bounds = bounds

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        outputs = []
        for plane, conv in enumerate(self.groups):
            start, stop = self.bounds[plane], self.bounds[plane + 1]
            inputs = volume[:, start:stop] if self.depthwise else volume
            outputs.append(_in_plane(inputs, conv, plane))
        return torch.cat(outputs, dim=1)


class InflatedConv(nn.Module):
    """A pretrained k x k convolution as a k x k x k one (I3D), its kernel spread evenly over
    the slice axis (the last)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.kernel_size[0] != conv.kernel_size[1] or conv.stride[0] != conv.stride[1]:
            raise ValueError("inflation needs square kernels and strides")
        if conv.dilation != (1, 1):
            raise ValueError("inflation of dilated convolutions is not supported")
        depth = conv.kernel_size[0]
        weight = conv.weight.detach().unsqueeze(-1).repeat(1, 1, 1, 1, depth) / depth
        self.weight = nn.Parameter(weight)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())
        self.stride = conv.stride[0]
        self.kernel = depth
        self.same = isinstance(conv, Conv2dSame)
        """timm's TF-"same" padding: computed from the input size, possibly asymmetric."""
        self.padding = conv.padding if not self.same else None
        self.groups = conv.groups

    def _pads(self, size: int) -> tuple[int, int]:
        if self.same:
            total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel - size, 0)
            return total // 2, total - total // 2
        return self.padding[0], self.padding[0]

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        x_pad, y_pad, z_pad = (self._pads(size) for size in volume.shape[2:])
        if any(z_pad):  # the slice axis repeats its edge slices: see the module docstring
            volume = F.pad(volume, (*z_pad, 0, 0, 0, 0), mode="replicate")
        volume = F.pad(volume, (0, 0, *y_pad, *x_pad))
        return F.conv3d(volume, self.weight, self.bias, self.stride, groups=self.groups)


class PlanarPerChannel(nn.Module):
    """A per-channel 2D layer (BatchNorm and its fused activation) applied to a volume: the
    two last axes are merged, which leaves every channel's values, and statistics, as they are."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        return self.layer(volume.flatten(3)).view_as(volume)


CONVERTERS = {"acs": ACSConv, "inflate": InflatedConv}


def convert_to_3d(module: nn.Module, conversion: str) -> nn.Module:
    """``module`` with every 2D convolution converted (:data:`CONVERSIONS`) and every 2D
    BatchNorm wrapped to take volumes; changes ``module`` in place and returns it."""
    if conversion not in CONVERTERS:
        raise ValueError(f"unknown conversion {conversion!r}; choose from {', '.join(CONVERSIONS)}")
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d):
            setattr(module, name, CONVERTERS[conversion](child))
        elif isinstance(child, nn.BatchNorm2d):
            setattr(module, name, PlanarPerChannel(child))
        elif isinstance(child, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            raise ValueError(f"{type(child).__name__} has no 3D conversion here")
        else:
            convert_to_3d(child, conversion)
    return module


class VolumeUnet(nn.Module):
    """A U-Net for volumes: a converted 2D encoder (smp's, so ``output_stride`` and weights
    behave as in 2D) with MONAI's 3D U-Net decoder and segmentation head."""

    def __init__(
        self,
        encoder: nn.Module,
        classes: int,
        conversion: str,
        decoder_channels: tuple[int, ...] = VOLUME_DECODER_CHANNELS,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.conversion = conversion
        self.decoder_channels = decoder_channels
        self.decoder = UNetDecoder(
            spatial_dims=3,
            encoder_channels=tuple(encoder.out_channels),
            decoder_channels=decoder_channels,
            act=("relu", {"inplace": True}),
            norm=("batch", {"eps": 1e-3, "momentum": 0.1}),
            dropout=0.0,
            bias=False,
            upsample="nontrainable",
            pre_conv="default",
            interp_mode="nearest",
            align_corners=None,
            is_pad=True,
        )
        self.segmentation_head = SegmentationHead(
            spatial_dims=3, in_channels=decoder_channels[-1], out_channels=classes, kernel_size=3
        )

    def freeze_encoder(self) -> None:
        """smp's freeze for ``--freeze-encoder-epochs`` (the trainer also puts the encoder in
        eval mode, so BatchNorm statistics stay as pretrained)."""
        self.encoder.requires_grad_(False)

    def unfreeze_encoder(self) -> None:
        self.encoder.requires_grad_(True)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        features = self.encoder(volume)
        # every encoder stage but the input itself is a skip connection, as in smp's U-Net
        return self.segmentation_head(self.decoder(features, len(features) - 2))
