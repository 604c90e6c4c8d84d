"""2.5D: cut volumes into stacks of k adjacent slices and put predictions back together.

Each stack becomes the channels of one 2D sample, so a 3-channel ImageNet encoder sees k=3
neighbouring slices unchanged. Slices past either end of the volume repeat the edge slice.
Slices are cut along one anatomical axis, axial by default; ``coronal`` and ``sagittal``
models of the same data see other neighbourhoods, and an ensemble of the three views
(FastSurfer's view aggregation) gives each voxel context from all three directions. The
functions here slice along the last array axis: callers move the slicing axis there first
(:func:`move_slice_axis_last`). A volume with C channels (modalities) gives C x k channels per
sample, channel by channel: the k slices of the first modality, then the k slices of the next.
"""

from __future__ import annotations

import torch
from monai.transforms import Compose
from torch.utils.data import Dataset

from medgraft.config.schema import SLICE_VIEWS
from medgraft.data.cases import LoadedCase


def slice_axis_index(view: str, orientation: str | None) -> int:
    """The spatial array axis (0-2) that ``view``'s slices are stacked along, for volumes
    reoriented to ``orientation`` (e.g. ``RAS``: sagittal 0, coronal 1, axial 2); volumes
    kept as stored are taken to be in that RAS-like order."""
    codes = (orientation or "RAS").upper()
    return next(i for i, code in enumerate(codes) if code in SLICE_VIEWS[view])


def move_slice_axis_last(tensor: torch.Tensor, axis: int) -> torch.Tensor:
    """A view of a (C, X, Y, Z) tensor with spatial ``axis`` moved last (no copy); writing
    into the view writes into ``tensor``."""
    return tensor.movedim(1 + axis, -1)


def stack_indices(depth: int, k: int) -> torch.Tensor:
    """(depth, k) slice indices of every stack, clamped at the volume's ends."""
    if k < 1 or k % 2 == 0:
        raise ValueError(f"k must be a positive odd number of slices, got {k}")
    offsets = torch.arange(k) - k // 2
    return (torch.arange(depth)[:, None] + offsets[None, :]).clamp(0, depth - 1)


def volume_to_stacks(
    volume: torch.Tensor, k: int, start: int = 0, stop: int | None = None
) -> torch.Tensor:
    """(C, H, W, D) volume → (n, C·k, H, W) stacks for axial slices ``start:stop`` (all by
    default).

    Taking a slice range lets inference stream a large volume in bounded batches.
    """
    if volume.ndim != 4:
        raise ValueError(f"expected a (C, H, W, D) volume, got {tuple(volume.shape)}")
    channels, height, width, _ = volume.shape
    indices = stack_indices(volume.shape[-1], k)[start:stop]
    stacks = volume[..., indices]  # (C, H, W, n, k)
    return stacks.permute(3, 0, 4, 1, 2).reshape(len(indices), channels * k, height, width)


def stacks_to_volume(per_slice: torch.Tensor) -> torch.Tensor:
    """(D, C, H, W) per-slice outputs → (C, H, W, D) volume; the inverse of the slicing."""
    return per_slice.permute(1, 2, 3, 0)


class SliceStackDataset(Dataset):
    """Every slice along spatial ``axis`` (2: axial for RAS volumes) of every cached case as a
    sample ``{image: (C·k,H,W), label: (1,H,W)}``."""

    def __init__(
        self, cases: list[LoadedCase], k: int, transform: Compose | None = None, axis: int = 2
    ) -> None:
        self.cases = [
            {key: move_slice_axis_last(value, axis) for key, value in case.voxels().items()}
            for case in cases
        ]
        self.k = k
        self.transform = transform
        self.index = [
            (case_idx, z)
            for case_idx, case in enumerate(self.cases)
            for z in range(case["image"].shape[-1])
        ]

    def __len__(self) -> int:
        return len(self.index)

    def foreground(self) -> list[bool]:
        """Whether each sample's centre slice holds any label (for balanced sampling)."""
        per_case = [(c["label"][0] > 0).flatten(0, 1).any(0) for c in self.cases]
        return [bool(per_case[case_idx][z]) for case_idx, z in self.index]

    def __getitem__(self, item: int) -> dict:
        case_idx, z = self.index[item]
        case = self.cases[case_idx]
        depth = case["image"].shape[-1]
        zs = stack_indices(depth, self.k)[z]
        image = case["image"][..., zs]  # (C, H, W, k)
        sample = {
            "image": image.permute(0, 3, 1, 2).reshape(-1, *image.shape[1:3]).contiguous(),
            "label": case["label"][..., z],
        }
        if "roi" in case:
            sample["roi"] = case["roi"][..., z]
        # `is None`, not truthiness: len() of a MONAI Compose builds a flattened copy that
        # reseeds every transform from the global seed, so each sample drew the same augmentation
        return sample if self.transform is None else self.transform(sample)
