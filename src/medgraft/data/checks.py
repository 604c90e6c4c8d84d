"""Transforms that refuse (or repair, when asked) what would train or predict silently wrong:
files of the wrong dimensionality, labels off their image's grid, stray label values, and 2D
masks saved as RGB or 0/255."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from medgraft.errors import MedgraftError

AFFINE_TOLERANCE_MM = 1e-3
"""Image and label affines may differ by this much (float32 header rounding), not more."""


def file_name(tensor: torch.Tensor, default: Hashable) -> str:
    """The file a loaded tensor came from, for error messages."""
    return str(tensor.meta.get("filename_or_obj", default) if hasattr(tensor, "meta") else default)


class CheckGeometryd(MapTransform):
    """Refuse a 2D file where volumes are expected and vice versa, a volume whose channel count
    is not the dataset's (or the model's), and volumes with a degenerate affine, as stored:
    orientation, spacing or resizing would otherwise fail on them with a message about array
    broadcasting or axes, or report a resampled shape the user never saw. Labels are always one
    channel; ``channel_names`` name the image's expected channels, in order."""

    def __init__(
        self, keys: KeysCollection, spatial_dims: int, channel_names: Sequence[str] = ()
    ) -> None:
        super().__init__(keys)
        self.spatial_dims = spatial_dims
        self.channel_names = list(channel_names)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            channels, *shape = d[key].shape
            if len(shape) != self.spatial_dims:
                kind = "3D volume" if self.spatial_dims == 3 else "2D image"
                raise MedgraftError(
                    f"{file_name(d[key], key)}: expected a {kind}, got shape {tuple(shape)}"
                )
            expected = max(len(self.channel_names), 1) if key == "image" else 1
            named = key == "image" and len(self.channel_names) > 1
            if (self.spatial_dims == 3 or named) and channels != expected:
                raise MedgraftError(
                    f"{file_name(d[key], key)}: {self._channel_problem(channels, shape, expected)}"
                )
            if self.spatial_dims == 3 and not abs(float(torch.det(d[key].affine[:3, :3]))) > 0:
                raise MedgraftError(
                    f"{file_name(d[key], key)}: the header's affine is degenerate (a zero or NaN "
                    f"axis): {d[key].affine[:3].tolist()}"
                )
        return d

    def _channel_problem(self, channels: int, shape: list[int], expected: int) -> str:
        found = (
            f"4D file with {channels} volumes of shape {tuple(shape)}"
            if channels > 1
            else f"{channels} channel of shape {tuple(shape)}"
        )
        if expected == 1:
            return f"{found}; expected one 3D volume"
        return (
            f"{found}; expected {expected} channels ({', '.join(self.channel_names)}): one 4D "
            "NIfTI, or nnU-Net channel files <case>_0000, _0001, … side by side"
        )


class SameGridd(MapTransform):
    """Refuse a label that is not on its image's voxel grid (shape and affine as stored).

    Checked on the files as read: later steps resample or resize each file on its own, so a
    misplaced label would otherwise be trained on silently.
    """

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        image = data["image"]
        image_name = file_name(image, "image")
        for key in [k for k in self.key_iterator(dict(data)) if k != "image"]:
            mask = data[key]
            name, what = file_name(mask, key), "label" if key == "label" else key.upper()
            if image.shape[1:] != mask.shape[1:]:
                raise MedgraftError(
                    f"{name}: {what} shape {tuple(mask.shape[1:])} != image shape "
                    f"{tuple(image.shape[1:])} ({image_name})"
                )
            difference = float((image.affine - mask.affine).abs().max())
            if difference > AFFINE_TOLERANCE_MM:
                raise MedgraftError(
                    f"{name}: {what} affine differs from the image's ({image_name}) by up to "
                    f"{difference:.3g}; the {what} must lie on the image's voxel grid"
                )
        return dict(data)


class FirstChannelMaskd(MapTransform):
    """Reduce a mask saved as RGB (common for PNG/JPEG masks) to its first channel."""

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if d[key].shape[0] > 1:
                d[key] = d[key][:1]
        return d


class RegionMaskd(MapTransform):
    """A region-of-interest mask as one 0/1 channel: inside wherever the file is non-zero."""

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = (d[key][:1] > 0).to(torch.float32)
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
    """Refuse masks with non-integer values or values outside the declared label set.

    With ``stray_to_background`` the stray values are set to 0 instead, and each mapping is
    appended to ``self.log`` so the run can record it.
    """

    def __init__(
        self,
        keys: KeysCollection,
        allowed: Sequence[int] | None,
        stray_to_background: bool = False,
    ) -> None:
        super().__init__(keys)
        self.allowed = None if allowed is None else set(allowed)
        self.stray_to_background = stray_to_background
        self.log: list[str] = []

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            mask = d[key]
            name = file_name(mask, key)
            values = torch.unique(torch.as_tensor(mask))
            bad = values[~torch.isfinite(values) | (values != torch.round(values))]
            if bad.numel():
                raise MedgraftError(
                    f"{name}: label map has non-integer values (e.g. {float(bad[0]):g})"
                )
            stray = (
                [] if self.allowed is None else sorted(set(values.long().tolist()) - self.allowed)
            )
            if stray:
                is_stray = torch.isin(torch.as_tensor(mask).long(), torch.tensor(stray))
                message = (
                    f"{name}: label values {stray} ({int(is_stray.sum())} voxels) are not in the "
                    f"dataset's labels {sorted(self.allowed)}"
                )
                if not self.stray_to_background:
                    raise MedgraftError(message)
                self.log.append(message + "; mapped to background")
                mask = mask.clone()
                mask[is_stray] = 0
            d[key] = mask.long()
        return d
