"""One scan the model's way, and its prediction back onto the scan's own grid.

Every reorientation and resampling done for the model is recorded (MONAI's invertible
transforms) and undone for the prediction, so each mask has the input's exact voxel grid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd

from medgraft.data.io import ScanFormat, ScanGeometry, format_of, read_channels
from medgraft.data.resample import SlabwiseSpacing, resamples_in_plane_only
from medgraft.data.transforms import (
    Preprocessing,
    apply_case_transforms,
    geometry_transforms,
    intensity_transforms,
)
from medgraft.errors import MedgraftError


@dataclass
class Scan:
    """A scan on the model's grid, with what is needed to map predictions back and save them."""

    image: torch.Tensor
    """(C, spatial…) on the model's grid, in the encoder's [0, 1] input range."""
    restore: Callable[[torch.Tensor, bool], np.ndarray]
    """Maps a (C, model grid) tensor back onto the input's own grid (``nearest`` for labels)."""
    format: ScanFormat
    geometry: ScanGeometry

    def write_mask(self, mask: np.ndarray, target: Path) -> None:
        self.format.write_mask(mask, self.geometry, target)

    def write_probabilities(self, probabilities: np.ndarray, target: Path) -> None:
        self.format.write_probabilities(probabilities, self.geometry, target)


def read_scan_for_model(path: Path, prep: Preprocessing) -> Scan:
    """Load one input the model's way, and keep what is needed to undo every spatial step.

    ``prep`` is the model's preprocessing; 2D resizing is left to the predictor, which maps
    probabilities back itself.
    """
    scan_format = format_of(path)
    if scan_format.volumetric != prep.volumetric:
        kind = "3D NIfTI volumes" if prep.volumetric else "2D images"
        if scan_format.name == "dicom-series":
            kind += ", not DICOM volumes"
        raise MedgraftError(f"{path}: this model segments {kind}")
    prep = dataclasses.replace(prep, image_size=None)
    # in-plane resampling runs slab by slab so a CT-sized volume fits in a few GB
    slabwise = SlabwiseSpacing(prep.spacing) if resamples_in_plane_only(prep) else None
    whole_volume = dataclasses.replace(prep, spacing=None) if slabwise else prep
    raw = read_channels(path)  # every channel file of the case (nnU-Net _0000, _0001, …)
    geometry = scan_format.geometry(path, raw)
    spatial = geometry_transforms(whole_volume, with_label=False)
    loaded = apply_case_transforms(spatial, {"image": raw})
    _check_dimensionality(loaded["image"], prep, path)
    if slabwise is not None:
        loaded = {"image": slabwise(loaded["image"])}
    # inverting needs only the geometry trace, not a second full-size copy of the volume
    reference = MetaTensor(
        torch.zeros(1),
        meta=loaded["image"].meta,
        applied_operations=loaded["image"].applied_operations,
    )
    image = _finite(intensity_transforms(prep)(loaded)["image"], path)
    invert_labels = Invertd("pred", spatial, orig_keys="image", nearest_interp=True)
    invert_values = Invertd("pred", spatial, orig_keys="image", nearest_interp=False)

    def restore(values: torch.Tensor, nearest: bool) -> np.ndarray:
        if slabwise is not None:
            values = slabwise.inverse(values, nearest)
        pred = MetaTensor(
            values, meta=reference.meta, applied_operations=reference.applied_operations
        )
        invert = invert_labels if nearest else invert_values
        restored = invert({"image": reference, "pred": pred})["pred"]
        return torch.as_tensor(restored).numpy()

    return Scan(image, restore, scan_format, geometry)


def _check_dimensionality(image: torch.Tensor, prep: Preprocessing, path: Path) -> None:
    """What the loading checks leave: the array as a whole (channels counted there)."""
    channels = max(len(prep.channels), 1)
    if prep.volumetric and (image.ndim != 4 or image.shape[0] != channels):
        raise MedgraftError(
            f"{path}: expected a {channels}-channel 3D volume, got shape {tuple(image.shape)}"
        )
    if not prep.volumetric and image.ndim != 3:
        raise MedgraftError(f"{path}: expected a 2D image, got shape {tuple(image.shape[1:])}")


def _finite(image: torch.Tensor, path: Path) -> torch.Tensor:
    tensor = torch.as_tensor(image)
    if not torch.isfinite(tensor).all():
        raise MedgraftError(f"{path}: image contains NaN or infinite values")
    return tensor
