"""In-plane resampling of large volumes slab by slab, and its exact inverse."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, Spacingd

from medgraft.data.transforms import Preprocessing

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
