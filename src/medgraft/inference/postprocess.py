"""Optional clean-up of predicted label maps, volumes per label, and QA overlays."""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import KeepLargestConnectedComponent, RemoveSmallObjects

OVERLAY_COLOURS = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
    ],
    dtype=np.float32,
)


def keep_largest_component(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per foreground class, keep only its largest connected component (MONAI)."""
    keep = KeepLargestConnectedComponent(
        applied_labels=list(range(1, num_classes)), independent=True
    )
    return torch.as_tensor(keep(labels[None]))[0].to(labels.dtype)


def remove_small_objects(labels: torch.Tensor, min_size: int, num_classes: int) -> torch.Tensor:
    """Per foreground class, drop connected components smaller than ``min_size`` voxels.

    MONAI's ``RemoveSmallObjects`` treats an integer image as already-labelled objects, so each
    class is cleaned as its own binary mask; removed voxels become background.
    """
    remove = RemoveSmallObjects(min_size=min_size)
    cleaned = labels.clone()
    for value in range(1, num_classes):
        mask = labels == value
        if mask.any():
            kept = torch.as_tensor(remove(mask[None])).bool()[0]
            cleaned[mask & ~kept] = 0
    return cleaned


def label_sizes(labels: np.ndarray, num_classes: int, unit_size: float) -> list[float]:
    """Size of each foreground label: voxel count * ``unit_size`` (mL per voxel, or 1 pixel)."""
    counts = np.bincount(labels.ravel(), minlength=num_classes)
    return [float(counts[v]) * unit_size for v in range(1, num_classes)]


def overlay_montage(image: np.ndarray, labels: np.ndarray, max_tiles: int = 6) -> np.ndarray:
    """RGB montage of mask over image for quick QA.

    ``image`` is (C, H, W[, D]) in [0, 1], ``labels`` (H, W[, D]). For volumes the tiles are
    axial slices spread evenly through the slices that hold foreground (all slices if none).
    """
    if labels.ndim == 2:
        tiles = [_blend(image.transpose(1, 2, 0), labels)]
    else:
        occupied = np.flatnonzero(labels.reshape(-1, labels.shape[-1]).any(0))
        candidates = occupied if occupied.size else np.arange(labels.shape[-1])
        picks = np.unique(
            np.linspace(0, candidates.size - 1, min(max_tiles, candidates.size)).round()
        )
        tiles = [
            _blend(image[0, ..., z][..., None], labels[..., z])
            for z in candidates[picks.astype(int)]
        ]
    return np.concatenate(tiles, axis=1).astype(np.uint8)


def _blend(image_hwc: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    grey = np.clip(image_hwc, 0.0, 1.0) * 255.0
    # RGB as it is; any other channel count (grey, named modalities) shows its first channel
    rgb = grey[..., :3] if grey.shape[-1] == 3 else np.repeat(grey[..., :1], 3, axis=-1)
    colours = OVERLAY_COLOURS[labels.astype(int) % len(OVERLAY_COLOURS)]
    foreground = (labels > 0)[..., None]
    return np.where(foreground, (1 - alpha) * rgb + alpha * colours, rgb)
