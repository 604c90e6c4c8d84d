"""MONAI dictionary transforms, composed as data, that turn files into model-ready tensors.

Two stages:

* case transforms (deterministic, cached once per case): load, channel handling,
  intensity to the encoder's [0, 1] input range, label checks, 2D resize;
* sample transforms (per training sample): pad each 2.5D stack so the encoder's strides divide it.

Encoder mean/std normalisation lives inside the model (see ``models.unet``), so training,
inference and exported models cannot disagree on it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    DivisiblePadd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    Resized,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
)

from medgraft.data.io import image_reader
from medgraft.errors import MedgraftError, first_line, root_cause

ENCODER_STRIDE = 32
PERCENTILES = (0.5, 99.5)


class FirstChannelMaskd(MapTransform):
    """Reduce a mask saved as RGB (common for PNG/JPEG masks) to its first channel."""

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if d[key].shape[0] > 1:
                d[key] = d[key][:1]
        return d


class BinarizeByteMaskd(MapTransform):
    """Map 0/255 masks (how 2D binary masks are usually saved) to 0/1 by thresholding at 127.

    Only applied to 2D masks whose maximum exceeds ``max_label``; JPEG masks carry compression
    noise around 0 and 255, which this threshold removes.
    """

    def __init__(self, keys: KeysCollection, max_label: int) -> None:
        super().__init__(keys)
        self.max_label = max_label

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if d[key].max() > self.max_label:
                d[key] = (d[key] > 127).to(d[key].dtype)
        return d


class ValidateLabelsd(MapTransform):
    """Refuse masks with non-integer values or values outside the declared label set."""

    def __init__(self, keys: KeysCollection, allowed: Sequence[int]) -> None:
        super().__init__(keys)
        self.allowed = set(allowed)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            mask = d[key]
            name = mask.meta.get("filename_or_obj", key) if hasattr(mask, "meta") else key
            values = torch.unique(mask.as_tensor() if hasattr(mask, "as_tensor") else mask)
            if not torch.all(values == torch.round(values)):
                raise MedgraftError(f"{name}: label map has non-integer values")
            stray = sorted(set(values.long().tolist()) - self.allowed)
            if stray:
                count = int(torch.isin(mask.long(), torch.tensor(stray)).sum())
                raise MedgraftError(
                    f"{name}: label values {stray} ({count} voxels) are not in the dataset's "
                    f"labels {sorted(self.allowed)}"
                )
            d[key] = mask.long()
        return d


class ToRGBd(MapTransform):
    """Give 2D images the three channels an ImageNet encoder expects (grey → RGB, drop alpha)."""

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            channels = d[key].shape[0]
            if channels == 1:
                d[key] = d[key].repeat(3, 1, 1)
            elif channels == 4:
                d[key] = d[key][:3]
            elif channels != 3:
                raise MedgraftError(f"{d[key].meta.get('filename_or_obj')}: {channels} channels")
        return d


def case_transforms(
    *, volumetric: bool, labels: Sequence[int] | None, image_size: int | None = None
) -> Compose:
    """Deterministic per-case pipeline; ``labels=None`` gives the image-only (inference) one."""
    keys = ["image"] if labels is None else ["image", "label"]
    steps: list = [
        LoadImaged(keys, reader=image_reader(), image_only=True, ensure_channel_first=True),
        EnsureTyped(keys, dtype=torch.float32, track_meta=True),
    ]
    steps += intensity_transforms(volumetric=volumetric).transforms
    if not volumetric and image_size is not None:
        steps.append(Resized(keys, spatial_size=(image_size, image_size), mode=_modes(keys)))
    if labels is not None:
        if not volumetric:
            steps += [FirstChannelMaskd("label"), BinarizeByteMaskd("label", max(labels))]
        steps.append(ValidateLabelsd("label", labels))
    return Compose(steps)


def apply_case_transforms(transform: Compose, record: dict) -> dict:
    """Run ``transform`` on one case; any failure becomes one :class:`MedgraftError` naming a file.

    MONAI wraps errors raised inside a ``Compose`` in its own RuntimeError; the user needs the
    innermost message (ours already names the file) instead.
    """
    try:
        return transform(dict(record))
    except Exception as exc:  # readers and transforms raise many types
        cause = root_cause(exc)
        if isinstance(cause, MedgraftError):
            raise cause from None
        raise MedgraftError(f"{record['image']}: cannot load ({first_line(cause)})") from exc


def intensity_transforms(*, volumetric: bool) -> Compose:
    """Map an already loaded ``image`` to the encoder's [0, 1] input range.

    Volumes: per-volume percentile clip, since MRI has no absolute intensity scale. 2D images:
    8-bit RGB (grey repeated, alpha dropped), divided by 255.
    """
    if volumetric:
        return Compose([_percentile_scaling()])
    return Compose([ToRGBd("image"), ScaleIntensityRanged("image", 0, 255, 0.0, 1.0, clip=True)])


def _percentile_scaling() -> ScaleIntensityRangePercentilesd:
    """Per-volume robust scaling to [0, 1]: MRI has no absolute intensity scale."""
    return ScaleIntensityRangePercentilesd(
        "image", *PERCENTILES, b_min=0.0, b_max=1.0, clip=True, channel_wise=True
    )


def _modes(keys: Sequence[str]) -> tuple[str, ...]:
    return tuple("bilinear" if k == "image" else "nearest" for k in keys)


def sample_transforms() -> Compose:
    """Per-sample steps for 2.5D stacks / 2D images: pad so stride-32 encoders divide the size."""
    return Compose([DivisiblePadd(["image", "label"], k=ENCODER_STRIDE, method="end")])
