"""Decoding whole cases once, up front (in memory, and on disk with ``--cache-dir``).

A :class:`LoadedCase` is what training and validation hold of a case: its voxels on the
planned grid, its voxel size, and the record it was read from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.data import PersistentDataset
from monai.transforms import Compose, Lambda
from monai.utils import convert_to_tensor

from medgraft.data.records import CaseRecord
from medgraft.data.transforms import Preprocessing, apply_case_transforms, intensity_transforms
from medgraft.errors import MedgraftError, first_line, root_cause
from medgraft.runtime import progress


@dataclass
class LoadedCase:
    """One decoded case: channel-first image and label on the planned grid (plain tensors:
    MONAI metadata on every slice and through the network costs more per sample than
    augmenting it, measured in bench_train.py), and where it came from."""

    record: CaseRecord
    """The dataset's record of the case: its name and files."""
    image: torch.Tensor
    label: torch.Tensor
    spacing: list[float]
    """Voxel size in mm (1 per pixel for 2D images), in the image's axis order."""
    roi: torch.Tensor | None = None
    """Region of interest (1 inside): pixels outside it are ignored by the loss and scoring."""

    @property
    def case_id(self) -> str:
        return self.record.case_id

    def voxels(self) -> dict[str, torch.Tensor]:
        """Image, label and ROI by key, as MONAI's dictionary transforms take them."""
        found = {"image": self.image, "label": self.label}
        return found if self.roi is None else {**found, "roi": self.roi}


def load_cases(
    records: list[CaseRecord],
    geometry: Compose,
    cache_dir: str | None = None,
) -> list[LoadedCase]:
    """Load every case once, up front: a bad file stops training before it starts.

    With ``cache_dir`` the loaded geometry is also kept on disk (MONAI ``PersistentDataset``),
    so later runs on the same data skip decoding.
    """
    # keep the voxel spacing as a plain value: the disk cache stores tensors without metadata
    geometry = Compose([*geometry.transforms, Lambda(_with_spacing)])
    persistent = (
        PersistentDataset([r.files() for r in records], geometry, cache_dir=cache_dir)
        if cache_dir
        else None
    )
    cases = []
    with progress() as bar:
        for index, record in enumerate(bar.track(records, description="loading cases")):
            if persistent is None:
                loaded = apply_case_transforms(geometry, record.files())
            else:
                try:
                    loaded = persistent[index]
                except Exception as exc:  # MONAI wraps the reader's error
                    cause = root_cause(exc)
                    if isinstance(cause, MedgraftError):
                        raise cause from None
                    raise MedgraftError(
                        f"{record.image}: cannot load ({first_line(cause)})"
                    ) from exc
            _check_pair(loaded, record)
            roi = loaded.get("roi")
            cases.append(
                LoadedCase(
                    record=record,
                    image=convert_to_tensor(loaded["image"], track_meta=False),
                    label=convert_to_tensor(loaded["label"], track_meta=False),
                    spacing=[float(v) for v in loaded["spacing"]],
                    roi=None if roi is None else convert_to_tensor(roi, track_meta=False),
                )
            )
    return cases


def _with_spacing(data: dict) -> dict:
    image = data["image"]
    spacing = image.pixdim if image.ndim == 4 else torch.ones(image.ndim - 1)
    return {**data, "spacing": torch.as_tensor(spacing, dtype=torch.float64)}


def _check_pair(loaded: dict, record: CaseRecord) -> None:
    """What the loading transforms leave to check: finite image values.

    Dimensions (2D/3D/4D) and the label's shape and affine are checked while loading
    (``CheckGeometryd``, ``SameGridd``), on the files as stored and with their metadata,
    which the disk cache drops.
    """
    if not torch.isfinite(torch.as_tensor(loaded["image"])).all():
        raise MedgraftError(f"{record.image}: image contains NaN or infinite values")


def apply_intensity(cases: list[LoadedCase], prep: Preprocessing) -> None:
    """Scale every loaded case's image to the encoder's [0, 1] input range, in place."""
    intensity = intensity_transforms(prep)
    for case in cases:
        case.image = convert_to_tensor(intensity({"image": case.image})["image"], track_meta=False)
