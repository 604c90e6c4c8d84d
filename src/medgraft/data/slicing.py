"""2.5D: cut volumes into stacks of k adjacent axial slices and put predictions back together.

Each stack becomes the channels of one 2D sample, so a 3-channel ImageNet encoder sees k=3
neighbouring slices unchanged. Slices past either end of the volume repeat the edge slice.
The slicing axis is the last array axis (axial for RAS/LPS-stored volumes). A volume with C
channels (modalities) gives C x k channels per sample, channel by channel: the k slices of the
first modality, then the k slices of the next.
"""

from __future__ import annotations

import torch
from monai.transforms import Compose
from torch.utils.data import Dataset


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
    """Every axial slice of every cached case as a sample ``{image: (C·k,H,W), label: (1,H,W)}``."""

    def __init__(self, cases: list[dict], k: int, transform: Compose | None = None) -> None:
        self.cases = cases
        self.k = k
        self.transform = transform
        self.index = [
            (case_idx, z)
            for case_idx, case in enumerate(cases)
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
        return self.transform(sample) if self.transform else sample
