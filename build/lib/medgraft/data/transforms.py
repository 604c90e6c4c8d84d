"""MONAI dictionary transforms, composed as data, that turn files into model-ready tensors.

Three stages:

* geometry (deterministic, invertible, cached once per case): load, orientation and spacing
  for volumes, channel handling and resize for 2D images, label checks;
* intensity (deterministic): to the encoder's [0, 1] input range, by modality;
* per training sample: augmentation; per batch: padding so the encoder's strides divide the
  size (:func:`collate_padded`).

Encoder mean/std normalisation lives inside the model (see ``models.unet``), so training,
inference and exported models cannot disagree on it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, pad_list_data_collate
from monai.transforms import (
    Compose,
    DivisiblePadd,
    EnsureTyped,
    Invertd,
    LoadImaged,
    MapTransform,
    Orientationd,
    Resized,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    Spacingd,
)
from monai.utils import convert_to_tensor

from medgraft.data.io import check_readable, image_reader
from medgraft.errors import MedgraftError, first_line, root_cause

ENCODER_STRIDE = 32
PERCENTILES = (0.5, 99.5)
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
"""PIL modes of 16-bit greyscale PNG/TIFF files."""
AFFINE_TOLERANCE_MM = 1e-3
"""Image and label affines may differ by this much (float32 header rounding), not more."""


def _name(tensor: torch.Tensor, default: Hashable) -> str:
    """The file a loaded tensor came from, for error messages."""
    return str(tensor.meta.get("filename_or_obj", default) if hasattr(tensor, "meta") else default)


class CheckGeometryd(MapTransform):
    """Refuse a 2D file where volumes are expected and vice versa, 4D volumes, and volumes with
    a degenerate affine, as stored: orientation, spacing or resizing would otherwise fail on
    them with a message about array broadcasting or axes, or report a resampled shape the user
    never saw."""

    def __init__(self, keys: KeysCollection, spatial_dims: int) -> None:
        super().__init__(keys)
        self.spatial_dims = spatial_dims

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            channels, *shape = d[key].shape
            if len(shape) != self.spatial_dims:
                kind = "3D volume" if self.spatial_dims == 3 else "2D image"
                raise MedgraftError(
                    f"{_name(d[key], key)}: expected a {kind}, got shape {tuple(shape)}"
                )
            if self.spatial_dims == 3 and channels != 1:
                raise MedgraftError(
                    f"{_name(d[key], key)}: 4D file with {channels} volumes of shape "
                    f"{tuple(shape)}; expected one 3D volume (multi-channel inputs are not "
                    "supported yet)"
                )
            if self.spatial_dims == 3 and not abs(float(torch.det(d[key].affine[:3, :3]))) > 0:
                raise MedgraftError(
                    f"{_name(d[key], key)}: the header's affine is degenerate (a zero or NaN "
                    f"axis): {d[key].affine[:3].tolist()}"
                )
        return d


class SameGridd(MapTransform):
    """Refuse a label that is not on its image's voxel grid (shape and affine as stored).

    Checked on the files as read: later steps resample or resize each file on its own, so a
    misplaced label would otherwise be trained on silently.
    """

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        image, label = data["image"], data["label"]
        image_name, label_name = _name(image, "image"), _name(label, "label")
        if image.shape[1:] != label.shape[1:]:
            raise MedgraftError(
                f"{label_name}: label shape {tuple(label.shape[1:])} != image shape "
                f"{tuple(image.shape[1:])} ({image_name})"
            )
        difference = float((image.affine - label.affine).abs().max())
        if difference > AFFINE_TOLERANCE_MM:
            raise MedgraftError(
                f"{label_name}: label affine differs from the image's ({image_name}) by up to "
                f"{difference:.3g}; the label must lie on the image's voxel grid"
            )
        return dict(data)


class EightBitRanged(MapTransform):
    """Bring 2D images of any bit depth to the 0-255 range ``intensity_transforms`` expects.

    16-bit files (X-ray, microscopy) are scaled by their format's full scale (255 / 65535,
    known from the PIL mode at load time), so a grey value means the same in every image;
    clipping them at 255 instead would turn them white. 32-bit integer or float files have no
    full scale and are min-max scaled per image. 8-bit images pass unchanged.
    """

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            mode = image.meta.get("mode") if hasattr(image, "meta") else None
            if mode in SIXTEEN_BIT_MODES:
                d[key] = image * (255.0 / 65535.0)
            elif mode in ("I", "F"):
                low, high = float(image.min()), float(image.max())
                d[key] = (image - low) * (255.0 / max(high - low, 1e-12))
        return d


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
            name = _name(mask, key)
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


class ToRGBd(MapTransform):
    """Give 2D images the three channels an ImageNet encoder expects (grey → RGB, drop alpha)."""

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            channels = d[key].shape[0]
            if channels in (1, 2):  # grey, grey + alpha
                d[key] = d[key][:1].repeat(3, 1, 1)
            elif channels == 4:
                d[key] = d[key][:3]
            elif channels != 3:
                raise MedgraftError(
                    f"{_name(d[key], key)}: {channels} channels; expected grey, RGB or RGBA"
                )
        return d


@dataclass(frozen=True)
class Preprocessing:
    """How cases reach the model's grid and [0, 1] input range; stored in every checkpoint.

    Volumes: reoriented to ``orientation`` and, when ``spacing`` is set, resampled in-plane
    (a spacing of 0 keeps that axis); intensity ``percentile`` (per-volume 0.5-99.5th
    percentile clip, for MRI) or ``window`` (a fixed clip range, for CT). 2D images: RGB on the
    8-bit scale (see :class:`EightBitRanged`), resized to ``image_size`` for the network.
    """

    volumetric: bool
    orientation: str | None = "RAS"
    spacing: tuple[float, ...] | None = None
    intensity: str = "percentile"
    window: tuple[float, float] | None = None
    image_size: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Preprocessing:
        fields = {**values}
        for key in ("spacing", "window"):
            if fields.get(key) is not None:
                fields[key] = tuple(fields[key])
        return cls(**fields)


def geometry_transforms(
    prep: Preprocessing,
    *,
    with_label: bool,
    allowed_labels: Sequence[int] | None = None,
    stray_to_background: bool = False,
) -> Compose:
    """Load a case and bring it to the model's grid; invertible, so predictions can go back."""
    keys = ["image", "label"] if with_label else ["image"]
    steps: list = [
        LoadImaged(keys, reader=image_reader(), image_only=True, ensure_channel_first=True),
        EnsureTyped(keys, dtype=torch.float32, track_meta=True),
        CheckGeometryd(keys, 3 if prep.volumetric else 2),
    ]
    if with_label:
        steps.append(SameGridd(keys))
    if not prep.volumetric:
        steps.append(EightBitRanged("image"))
    steps += spatial_transforms(prep, keys).transforms
    if with_label:
        if not prep.volumetric:
            steps += [
                FirstChannelMaskd("label"),
                BinarizeByteMaskd("label", max(allowed_labels or [1])),
            ]
        steps.append(ValidateLabelsd("label", allowed_labels, stray_to_background))
    return Compose(steps)


def spatial_transforms(prep: Preprocessing, keys: Sequence[str] = ("image",)) -> Compose:
    """Orientation and spacing (volumes) or RGB channels and resize (2D), on loaded images."""
    keys = list(keys)
    modes = _modes(keys)
    if prep.volumetric:
        steps = [Orientationd(keys, axcodes=prep.orientation)] if prep.orientation else []
        if prep.spacing:
            steps.append(Spacingd(keys, pixdim=prep.spacing, mode=modes))
        return Compose(steps)
    steps = [ToRGBd("image")]
    if prep.image_size:
        steps.append(Resized(keys, spatial_size=(prep.image_size,) * 2, mode=modes))
    return Compose(steps)


def intensity_transforms(prep: Preprocessing) -> Compose:
    """Map a loaded ``image`` to the encoder's [0, 1] input range (see :class:`Preprocessing`)."""
    if not prep.volumetric:
        return Compose([ScaleIntensityRanged("image", 0, 255, 0.0, 1.0, clip=True)])
    if prep.intensity == "window":
        low, high = prep.window
        return Compose([ScaleIntensityRanged("image", low, high, 0.0, 1.0, clip=True)])
    return Compose([_percentile_scaling()])


def case_transforms(
    prep: Preprocessing, *, with_label: bool, allowed_labels: Sequence[int] | None = None
) -> Compose:
    """Geometry then intensity: a whole case, model-ready."""
    geometry = geometry_transforms(prep, with_label=with_label, allowed_labels=allowed_labels)
    return Compose([*geometry.transforms, *intensity_transforms(prep).transforms])


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
        for key in ("image", "label"):  # name the file that cannot be read, and why
            if key in record:
                check_readable(record[key])
        raise MedgraftError(f"{record['image']}: cannot load ({first_line(cause)})") from exc


def _percentile_scaling() -> ScaleIntensityRangePercentilesd:
    """Per-volume robust scaling to [0, 1]: MRI has no absolute intensity scale."""
    return ScaleIntensityRangePercentilesd(
        "image", *PERCENTILES, b_min=0.0, b_max=1.0, clip=True, channel_wise=True
    )


def _modes(keys: Sequence[str]) -> tuple[str, ...]:
    return tuple("bilinear" if k == "image" else "nearest" for k in keys)


def collate_padded(samples: list[dict]) -> dict:
    """A training batch: samples padded to the batch's largest size, then so that the encoder's
    strides divide it. Padding once per batch instead of per sample: MONAI's per-sample padding
    cost about 8% of a CPU epoch (scripts/bench_train.py). Plain tensors come out: MONAI
    metadata carried through the network costs time and is never read there."""
    batch = _BATCH_PAD(pad_list_data_collate(samples))
    return {key: convert_to_tensor(value, track_meta=False) for key, value in batch.items()}


_BATCH_PAD = DivisiblePadd(["image", "label"], k=(1, ENCODER_STRIDE, ENCODER_STRIDE), method="end")


SLAB_DEPTH = 16
"""Axial slices resampled at once by :class:`SlabwiseSpacing`."""


def resamples_in_plane_only(prep: Preprocessing) -> bool:
    """Whether ``prep``'s spacing step keeps the through-plane axis, so slabs are independent."""
    spacing = prep.spacing or ()
    return prep.volumetric and bool(spacing) and (len(spacing) < 3 or spacing[2] <= 0)


class SlabwiseSpacing:
    """MONAI ``Spacingd`` applied ``SLAB_DEPTH`` axial slices at a time, and inverted the same way.

    ``Spacingd`` resamples through a dense sampling grid of the whole output volume: for a
    512 x 512 x 400 CT that grid and its temporaries take several GB. When the through-plane
    spacing is kept, each output slice depends only on the same input slice, so resampling slab
    by slab gives the same voxels with memory bounded by the slab. Every slab is padded to
    ``SLAB_DEPTH`` slices, so all get the same in-plane output size (MONAI rounds the output
    extent from corner coordinates, which for oblique affines depend on the slab's depth). One
    instance per case: it keeps each slab's transform trace so :meth:`inverse` can undo exactly
    what was done.
    """

    def __init__(self, spacing: Sequence[float]) -> None:
        self.spacing = Spacingd("image", pixdim=spacing, mode="bilinear")
        self.slabs: list[tuple[int, int, MetaTensor]] = []

    def __call__(self, volume: MetaTensor) -> MetaTensor:
        """(C, H, W, D) on the input grid → (C, h, w, D) at the target in-plane spacing."""
        depth = volume.shape[-1]
        array = volume.as_tensor()
        pieces = []
        for start in range(0, depth, SLAB_DEPTH):
            stop = min(start + SLAB_DEPTH, depth)
            # every slab keeps the volume's affine, so all share one in-plane output grid
            slab = MetaTensor(_pad_depth(array[..., start:stop]), meta=volume.meta)
            resampled = self.spacing({"image": slab})["image"]
            self.slabs.append((start, stop, resampled))
            pieces.append(resampled.as_tensor()[..., : stop - start])
        result = MetaTensor(
            torch.cat(pieces, dim=-1),
            meta=volume.meta,
            applied_operations=volume.applied_operations,  # earlier steps stay invertible
        )
        result.affine = self.slabs[0][2].affine
        return result

    def inverse(self, values: torch.Tensor, nearest: bool) -> torch.Tensor:
        """(C, h, w, D) on the resampled grid → (C, H, W, D) on the input grid, slab by slab."""
        invert = Invertd("pred", Compose([self.spacing]), orig_keys="image", nearest_interp=nearest)
        pieces = []
        for start, stop, reference in self.slabs:
            slab = MetaTensor(
                _pad_depth(values[..., start:stop]),
                meta=reference.meta,
                applied_operations=reference.applied_operations,
            )
            restored = invert({"image": reference, "pred": slab})["pred"]
            pieces.append(torch.as_tensor(restored)[..., : stop - start].to(values.dtype))
        return torch.cat(pieces, dim=-1)


def _pad_depth(slab: torch.Tensor) -> torch.Tensor:
    """Zero slices appended up to ``SLAB_DEPTH`` (a copy, also when none are needed)."""
    return torch.nn.functional.pad(slab, (0, SLAB_DEPTH - slab.shape[-1]))
