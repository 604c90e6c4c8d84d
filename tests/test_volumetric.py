"""3D U-Nets on 2D ImageNet encoders: the carried weights compute what the 2D layers compute.

The encoder is the real ImageNet EfficientNet-Lite0 (the offline package), so depthwise layers
and timm's TF-"same" convolutions, with their asymmetric padding, are among those checked.
"""

from __future__ import annotations

import pytest
import torch
from timm.layers import Conv2dSame
from torch import nn

from medgraft.config.schema import DEFAULT_ENCODER
from medgraft.models.registry import get_encoder
from medgraft.models.unet import architecture, build_segmenter
from medgraft.models.volumetric import (
    PLANES,
    ACSConv,
    InflatedConv,
    convert_to_3d,
    split_channels,
)
from medgraft.models.weights import resolve_weights

IN_PLANE = (9, 10)
"""Odd and even sizes: TF "same" pads stride-2 layers asymmetrically on odd ones."""
DEPTH = 5


@pytest.fixture(scope="module")
def pretrained_2d() -> nn.Module:
    """The ImageNet Lite0 U-Net encoder for one input channel (first convolution summed)."""
    spec = get_encoder(DEFAULT_ENCODER)
    weights = resolve_weights(spec, "imagenet", offline=True)
    model = build_segmenter(architecture(spec, 1, 2), spec, weights)
    return model.encoder.eval()


def _convolutions(encoder: nn.Module) -> dict[str, nn.Conv2d]:
    return {name: m for name, m in encoder.named_modules() if isinstance(m, nn.Conv2d)}


def _converted(encoder: nn.Module, conversion: str) -> dict[str, nn.Module]:
    import copy

    converted = convert_to_3d(copy.deepcopy(encoder), conversion).eval()
    return dict(converted.named_modules())


def _constant_along(plane_input: torch.Tensor, axis: int, depth: int) -> torch.Tensor:
    """(N, C, A, B) planes repeated ``depth`` times along volume axis ``axis`` (2, 3 or 4)."""
    shape = plane_input.shape
    return plane_input.unsqueeze(axis).expand(*shape[:axis], depth, *shape[axis:])


def test_the_checked_layers_include_depthwise_and_tf_same_ones(pretrained_2d):
    convolutions = _convolutions(pretrained_2d).values()
    assert any(isinstance(c, Conv2dSame) for c in convolutions)
    assert any(c.groups == c.in_channels > 1 for c in convolutions)
    assert any(c.stride == (2, 2) for c in convolutions)


@torch.no_grad()
def test_acs_each_group_is_its_2d_layer_on_a_volume_constant_along_its_axis(pretrained_2d):
    """ACS group g (axial, coronal, sagittal) on a volume constant along spatial axis 2 - g
    equals the 2D layer's response, plane by plane, on its share of the output channels."""
    converted = _converted(pretrained_2d, "acs")
    torch.manual_seed(0)
    checked = 0
    for name, conv in _convolutions(pretrained_2d).items():
        acs = converted[name]
        assert isinstance(acs, ACSConv), name
        planes = torch.randn(1, conv.in_channels, *IN_PLANE)
        expected = conv(planes)
        sizes = split_channels(conv.out_channels)
        assert sum(sizes) == conv.out_channels
        start = 0
        for group, _ in enumerate(PLANES):
            axis = 4 - group  # the volume axis this group's planes stack along
            volume = _constant_along(planes, axis, DEPTH)
            out = acs(volume)[:, start : start + sizes[group]]
            stride_depth = -(-DEPTH // conv.stride[0])
            assert out.shape[axis] == stride_depth
            want = _constant_along(expected[:, start : start + sizes[group]], axis, stride_depth)
            torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5, msg=f"{name} {group}")
            start += sizes[group]
        checked += 1
    assert checked == len(_convolutions(pretrained_2d)) > 30


@torch.no_grad()
def test_inflation_each_layer_matches_2d_on_a_volume_constant_along_the_slice_axis(
    pretrained_2d,
):
    converted = _converted(pretrained_2d, "inflate")
    torch.manual_seed(1)
    for name, conv in _convolutions(pretrained_2d).items():
        inflated = converted[name]
        assert isinstance(inflated, InflatedConv), name
        planes = torch.randn(1, conv.in_channels, *IN_PLANE)
        out = inflated(_constant_along(planes, 4, DEPTH))
        depth = -(-DEPTH // conv.stride[0])
        torch.testing.assert_close(
            out, _constant_along(conv(planes), 4, depth), rtol=1e-5, atol=1e-5, msg=name
        )


@torch.no_grad()
def test_inflated_encoder_features_equal_2d_features_slice_by_slice(pretrained_2d):
    """The whole encoder, BatchNorm and activations included: every stage's features on a
    volume constant along the slice axis are the 2D features of that slice."""
    converted = convert_to_3d(__import__("copy").deepcopy(pretrained_2d), "inflate").eval()
    torch.manual_seed(2)
    image = torch.rand(1, 1, 32, 48)
    volume = _constant_along(image, 4, 16)
    for planar, volumetric in zip(pretrained_2d(image), converted(volume), strict=True):
        depth = volumetric.shape[-1]
        torch.testing.assert_close(
            volumetric, _constant_along(planar, 4, depth), rtol=1e-4, atol=1e-4
        )


def test_3d_unet_keeps_the_pretrained_weights_and_the_volume_shape():
    spec = get_encoder(DEFAULT_ENCODER)
    weights = resolve_weights(spec, "imagenet", offline=True)
    arch = architecture(spec, 1, 3, conversion="acs")
    model = build_segmenter(arch, spec, weights).eval()
    assert model.architecture == arch
    plain = build_segmenter(architecture(spec, 1, 3), spec, weights)
    stem = plain.encoder.model.conv_stem.weight
    groups = model.encoder.model.conv_stem.groups
    torch.testing.assert_close(torch.cat([g.weight for g in groups]), stem)
    with torch.no_grad():
        out = model(torch.rand(1, 1, 32, 48, 16))
    assert out.shape == (1, 3, 32, 48, 16)
    assert model.output_stride == 16
