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

import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, pad_list_data_collate
from monai.transforms import (
    Compose,
    DivisiblePadd,
    EnsureTyped,
    MapTransform,
    Orientationd,
    Resized,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    Spacingd,
)
from monai.utils import convert_to_tensor

from medgraft.config.schema import TrainConfig
from medgraft.data.checks import (
    BinarizeByteMaskd,
    CheckGeometryd,
    FirstChannelMaskd,
    RegionMaskd,
    SameGridd,
    ValidateLabelsd,
    file_name,
)
from medgraft.data.io import check_readable, read_channels, read_scan
from medgraft.errors import MedgraftError, first_line, root_cause

PERCENTILES = (0.5, 99.5)
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
"""PIL modes of 16-bit greyscale PNG/TIFF files."""


class LoadScand(MapTransform):
    """Read each key's path with the format registered for it in ``data.io`` (NIfTI, a DICOM
    series folder, a 2D image); the image with all its channel files (nnU-Net ``_0000``,
    ``_0001``, …). An image already read passes through unchanged."""

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if not isinstance(d[key], MetaTensor):
                d[key] = read_channels(d[key]) if key == "image" else read_scan(d[key])
        return d


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
                    f"{file_name(d[key], key)}: {channels} channels; expected grey, RGB or RGBA"
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
    channels: tuple[str, ...] = ()
    """The input channels (modalities) in order when there are several; empty: one channel
    for volumes, RGB for 2D images (grey and RGBA converted)."""
    orientation: str | None = TrainConfig.orientation
    spacing: tuple[float, ...] | None = None
    intensity: str = "percentile"
    window: tuple[float, float] | None = None
    image_size: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Preprocessing:
        fields = {**values}
        for key in ("spacing", "window", "channels"):
            if fields.get(key) is not None:
                fields[key] = tuple(fields[key])
        return cls(**fields)


def geometry_transforms(
    prep: Preprocessing,
    *,
    with_label: bool,
    allowed_labels: Sequence[int] | None = None,
    stray_to_background: bool = False,
    with_roi: bool = False,
) -> Compose:
    """Load a case and bring it to the model's grid; invertible, so predictions can go back.
    ``with_roi``: the record's ``roi`` mask comes along (nearest interpolation), as 0/1."""
    keys = ["image", "label"] if with_label else ["image"]
    keys += ["roi"] if with_roi else []
    steps: list = [
        LoadScand(keys),
        EnsureTyped(keys, dtype=torch.float32, track_meta=True),
        CheckGeometryd(keys, 3 if prep.volumetric else 2, prep.channels),
    ]
    if len(keys) > 1:
        steps.append(SameGridd(keys))
    if not prep.volumetric:
        steps.append(EightBitRanged("image"))
    steps += spatial_transforms(prep, keys).transforms
    if with_label and not prep.volumetric:
        steps += [
            FirstChannelMaskd("label"),
            BinarizeByteMaskd("label", max(allowed_labels or [1])),
        ]
    if with_roi:
        steps.append(RegionMaskd("roi"))
    if with_label:  # last: the trainer reads its log of labels mapped to background
        steps.append(ValidateLabelsd("label", allowed_labels, stray_to_background))
    return Compose(steps)


def spatial_transforms(prep: Preprocessing, keys: Sequence[str] = ("image",)) -> Compose:
    """Orientation and spacing (volumes) or RGB channels and resize (2D), on loaded images."""
    keys = list(keys)
    modes = _modes(keys)
    if prep.volumetric:
        # the axis labels MONAI has always used, given explicitly: the same meaning, and no
        # FutureWarning about a default that is going to change
        labels = (("L", "R"), ("P", "A"), ("I", "S"))
        orient = Orientationd(keys, axcodes=prep.orientation, labels=labels)
        steps = [orient] if prep.orientation else []
        if prep.spacing:
            steps.append(Spacingd(keys, pixdim=prep.spacing, mode=modes))
        return Compose(steps)
    # named channels (nnU-Net 2D: <case>_0000.png, _0001.png, …) are kept as they are
    steps = [] if prep.channels else [ToRGBd("image")]
    if prep.image_size:
        steps.append(Resized(keys, spatial_size=(prep.image_size,) * 2, mode=modes))
    return Compose(steps)


def intensity_transforms(prep: Preprocessing) -> Compose:
    """Map a loaded ``image`` to the encoder's [0, 1] input range (see :class:`Preprocessing`)."""
    if not prep.volumetric:
        return Compose([ScaleIntensityRanged("image", 0, 255, 0.0, 1.0, clip=True)])
    if prep.intensity == "window":
        if len(prep.channels) > 1:
            return Compose([ChannelIntensityd("image", prep.window, ct_channels(prep.channels))])
        low, high = prep.window
        return Compose([ScaleIntensityRanged("image", low, high, 0.0, 1.0, clip=True)])
    return Compose([_percentile_scaling()])


def ct_channels(channels: Sequence[str]) -> list[bool]:
    """Which channels hold CT (Hounsfield units: a fixed window), by their modality name."""
    return [name.strip().upper() == "CT" for name in channels]


class ChannelIntensityd(MapTransform):
    """Each channel by its modality: CT channels clipped to the CT window, the others (MRI,
    PET, …) scaled by their own 0.5-99.5th percentiles, as nnU-Net normalises per channel."""

    def __init__(self, keys: KeysCollection, window: tuple[float, float], is_ct: list[bool]):
        super().__init__(keys)
        self.window = ScaleIntensityRanged("c", *window, 0.0, 1.0, clip=True)
        self.percentile = ScaleIntensityRangePercentilesd(
            "c", *PERCENTILES, b_min=0.0, b_max=1.0, clip=True
        )
        self.is_ct = is_ct

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            scaled = [
                (self.window if ct else self.percentile)({"c": image[i : i + 1]})["c"]
                for i, ct in enumerate(self.is_ct)
            ]
            d[key] = torch.cat([torch.as_tensor(c) for c in scaled]).to(image.dtype)
            if isinstance(image, MetaTensor):
                d[key] = MetaTensor(d[key], meta=image.meta)
        return d


def case_transforms(
    prep: Preprocessing, *, with_label: bool, allowed_labels: Sequence[int] | None = None
) -> Compose:
    """Geometry then intensity: a whole case, model-ready."""
    geometry = geometry_transforms(prep, with_label=with_label, allowed_labels=allowed_labels)
    return Compose([*geometry.transforms, *intensity_transforms(prep).transforms])


def apply_case_transforms(transform: Compose, files: dict) -> dict:
    """Run ``transform`` on one case; any failure becomes one :class:`MedgraftError` naming a file.

    ``files``: the case's inputs by MONAI key (``CaseRecord.files()``, or an image already read).
    MONAI wraps errors raised inside a ``Compose`` in its own RuntimeError; the user needs the
    innermost message (ours already names the file) instead.
    """
    try:
        return transform(dict(files))
    except Exception as exc:  # readers and transforms raise many types
        cause = root_cause(exc)
        if isinstance(cause, MedgraftError):
            raise cause from None
        for key in ("image", "label"):  # name the file that cannot be read, and why
            if isinstance(files.get(key), (str, os.PathLike)):
                check_readable(files[key])
        source = file_name(files["image"], files["image"])
        raise MedgraftError(f"{source}: cannot load ({first_line(cause)})") from exc


def _percentile_scaling() -> ScaleIntensityRangePercentilesd:
    """Per-volume robust scaling to [0, 1]: MRI has no absolute intensity scale."""
    return ScaleIntensityRangePercentilesd(
        "image", *PERCENTILES, b_min=0.0, b_max=1.0, clip=True, channel_wise=True
    )


def _modes(keys: Sequence[str]) -> tuple[str, ...]:
    return tuple("bilinear" if k == "image" else "nearest" for k in keys)


def collate_padded(samples: list[dict], divisor: int) -> dict:
    """A training batch: samples padded to the batch's largest size, then so that ``divisor``
    (the encoder's output stride) divides it. Padding once per batch instead of per sample:
    MONAI's per-sample padding cost about 8% of a CPU epoch (scripts/bench_train.py). Plain
    tensors come out: MONAI metadata carried through the network costs time and is never read
    there."""
    keys = ["image", "label", "roi"]
    # MONAI's patch samplers give each item as a list of its patches
    samples = [s for item in samples for s in (item if isinstance(item, list) else [item])]
    spatial_dims = samples[0]["image"].ndim - 1
    k = (1, *[divisor] * spatial_dims)
    pad = DivisiblePadd(keys, k=k, method="end", allow_missing_keys=True)
    batch = pad(pad_list_data_collate(samples))
    return {key: convert_to_tensor(value, track_meta=False) for key, value in batch.items()}
