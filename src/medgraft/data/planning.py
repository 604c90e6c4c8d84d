"""From a dataset's fingerprint to its preprocessing plan: target spacing, intensity scheme,
CT window, as nnU-Net plans from the training cases (and only from them)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch

from medgraft.config.schema import TrainConfig
from medgraft.data.cases import LoadedCase
from medgraft.data.discovery import DatasetSpec
from medgraft.data.io import read_geometry
from medgraft.data.records import CaseRecord
from medgraft.data.transforms import Preprocessing, ct_channels
from medgraft.errors import MedgraftError

CT_WINDOW_PERCENTILES = (0.5, 99.5)


def plan_preprocessing(
    spec: DatasetSpec, train_records: list[CaseRecord], config: TrainConfig
) -> Preprocessing:
    """How cases reach the model: orientation, spacing, intensity by modality, 2D size.

    A CT window is set later, from the loaded training cases (:func:`with_ct_window`).
    """
    volumetric = spec.is_volumetric
    channels = tuple(spec.channels) if len(spec.channels) > 1 else ()
    any_ct = any(ct_channels(channels)) or spec.modality.upper() == "CT"
    return Preprocessing(
        volumetric=volumetric,
        channels=channels,
        orientation=config.orientation if volumetric else None,
        spacing=target_spacing(spec, train_records, config.spacing, config.orientation),
        intensity="window" if any_ct else "percentile",
        image_size=None if volumetric else config.image_size,
    )


def with_ct_window(prep: Preprocessing, train_cases: list[LoadedCase]) -> Preprocessing:
    """``prep`` with its CT window measured on the training cases (unchanged for MRI)."""
    if prep.intensity != "window":
        return prep
    channel = ct_channels(prep.channels).index(True) if prep.channels else 0
    return Preprocessing.from_dict({**prep.to_dict(), "window": ct_window(train_cases, channel)})


def target_spacing(spec: DatasetSpec, records: list[CaseRecord], setting: str, orientation: str):
    """``auto``: the training cases' median in-plane spacing (after reorientation); through-plane
    spacing is kept (0). ``none`` keeps every case's own grid; ``x,y[,z]`` sets it."""
    if not spec.is_volumetric or setting == "none":
        return None
    if setting != "auto":
        try:
            values = [float(v) for v in setting.split(",")]
        except ValueError as exc:
            raise MedgraftError(
                f"--spacing must be auto, none or x,y[,z], not '{setting}'"
            ) from exc
        return tuple(values + [0.0] * (3 - len(values)))
    zooms = []
    for record in records:
        geometry = read_geometry(record.image)
        case_zooms = geometry.zooms
        if geometry.shape is not None and len(geometry.shape) not in (3, 4):
            continue  # not a volume: loading the case reports it with the full story
        # (a 4D NIfTI holds channels on its last axis; its first three are the volume's)
        ornt = nib.orientations.io_orientation(geometry.affine)
        target = nib.orientations.axcodes2ornt(orientation)
        ras = np.zeros(3)
        for axis, (out_axis, _) in enumerate(ornt[:3]):
            ras[int(np.flatnonzero(target[:, 0] == out_axis)[0])] = case_zooms[axis]
        zooms.append(ras)
    if not zooms:
        return None
    median = np.median(np.array(zooms), axis=0)
    return (round(float(median[0]), 4), round(float(median[1]), 4), 0.0)


def ct_window(cases: list[LoadedCase], channel: int = 0) -> tuple[float, float]:
    """nnU-Net's CT normalisation: 0.5-99.5th percentiles of foreground intensities (of the
    CT ``channel``)."""
    generator = torch.Generator().manual_seed(0)
    samples = []
    for case in cases:
        values = case.image[channel][case.label[0] > 0]
        if values.numel() > 100_000:
            values = values[torch.randperm(values.numel(), generator=generator)[:100_000]]
        samples.append(values)
    values = torch.cat(samples) if samples else torch.empty(0)
    if values.numel() == 0:
        raise MedgraftError("no foreground voxels in the training cases to set the CT window")
    low, high = np.percentile(values.numpy(), CT_WINDOW_PERCENTILES)
    return float(low), float(high)
