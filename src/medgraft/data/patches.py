"""3D training patches: the size planned from the cases, sampled with a foreground share and
augmented in 3D, as MONAI dictionary transforms.

Patches are cut before they are augmented, so each sample's cost follows the patch, not the
volume (a CT is 100x a hippocampus); rotations then fill the corners from the patch's border
voxels (``padding_mode="border"``), as nnU-Net's spatial transform does near its patch's edge.
Flips run along every axis only when ``AugmentOptions.flips`` allows them: on volumes they swap
anatomical sides, so they are off unless asked for, as for 2.5D.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    ScaleIntensityRanged,
    SpatialPadd,
)

from medgraft.config.schema import AugmentOptions, TrainConfig
from medgraft.data.discovery import DatasetSpec
from medgraft.errors import MedgraftError

MAX_AUTO_PATCH = 128
"""Largest side ``--volume-patch auto`` plans: a 128^3 patch already takes seconds per step on
two CPU cores; larger volumes are covered by sliding windows."""


def check_volume_options(config: TrainConfig, spec: DatasetSpec) -> None:
    """``--dims 3`` with data or options it cannot work with: one line, before any loading."""
    if not spec.is_volumetric:
        raise MedgraftError(
            f"{config.data}: --dims 3 trains on volumes (NIfTI, DICOM series); this dataset "
            "holds 2D images, which have no third axis"
        )
    if config.views:
        raise MedgraftError(
            f"--views {config.views!r} trains one 2.5D model per view; a 3D model (--dims 3) "
            "sees all three axes at once"
        )
    if config.deep_supervision:
        raise MedgraftError("--deep-supervision needs a 2D decoder (--dims 2)")


def plan_patch(option: str, shapes: Sequence[Sequence[int]], stride: int) -> tuple[int, int, int]:
    """The patch ``--volume-patch`` asks for: ``x,y,z`` given, or ``auto``, the median training
    case's shape rounded up to the encoder's stride (capped at :data:`MAX_AUTO_PATCH`)."""
    if option.strip().lower() != "auto":
        try:
            sizes = tuple(int(v) for v in option.split(","))
        except ValueError:
            sizes = ()
        if len(sizes) != 3 or any(s <= 0 or s % stride for s in sizes):
            raise MedgraftError(
                f"--volume-patch {option!r}: give x,y,z in voxels, each a positive multiple of "
                f"{stride} (the encoder's stride), or auto"
            )
        return sizes  # type: ignore[return-value]
    median = np.median(np.asarray(shapes), axis=0)
    cap = MAX_AUTO_PATCH // stride * stride
    return tuple(min(cap, stride * math.ceil(float(m) / stride)) for m in median)  # type: ignore[return-value]


def patch_transforms(
    keys: Sequence[str],
    patch: Sequence[int],
    foreground_ratio: float,
    augment: AugmentOptions,
) -> Compose:
    """Pad to the patch, cut it (with ``foreground_ratio`` of patches centred on the label;
    negative: anywhere), then augment: ``keys[0]`` is the image, the rest label maps."""
    keys = list(keys)
    steps: list = [SpatialPadd(keys, spatial_size=patch)]
    if foreground_ratio < 0:
        steps.append(RandSpatialCropd(keys, roi_size=patch, random_size=False))
    else:
        steps.append(
            RandCropByPosNegLabeld(
                keys,
                label_key="label",
                spatial_size=patch,
                pos=foreground_ratio,
                neg=1.0 - foreground_ratio,
                num_samples=1,
            )
        )
    if augment.enabled and augment.strength > 0:
        steps += augmentation(keys, augment)
    return Compose(steps)


def augmentation(keys: list[str], config: AugmentOptions) -> list:
    """3D counterparts of the 2D families (``data.augment``) at the same strengths."""
    s = config.strength
    image, masks = keys[0], keys[1:]
    modes = ["bilinear"] + ["nearest"] * len(masks)
    steps: list = []
    if config.flips:
        steps += [RandFlipd(keys, prob=min(0.5, 0.5 * s), spatial_axis=axis) for axis in range(3)]
    if config.affine:
        angle = math.radians(15 * s)
        steps.append(
            RandAffined(
                keys,
                prob=min(1.0, 0.5 * s),
                rotate_range=(angle, angle, angle),
                scale_range=(0.1 * s,) * 3,
                mode=modes,
                padding_mode="border",
            )
        )
    if config.intensity:
        steps += [
            RandScaleIntensityd(image, factors=0.1 * s, prob=min(1.0, 0.5 * s)),
            RandShiftIntensityd(image, offsets=0.1 * s, prob=min(1.0, 0.5 * s)),
            RandAdjustContrastd(image, gamma=(1 - 0.2 * s, 1 + 0.2 * s), prob=min(1.0, 0.3 * s)),
        ]
    if config.noise:
        steps.append(RandGaussianNoised(image, std=0.03 * s, prob=min(1.0, 0.3 * s)))
    if config.elastic:
        raise MedgraftError("--elastic is 2D only; 3D training has no elastic deformation")
    # intensities stay in the encoder's [0, 1] input range, as after 2D augmentation
    steps.append(ScaleIntensityRanged(image, 0.0, 1.0, 0.0, 1.0, clip=True))
    return steps
