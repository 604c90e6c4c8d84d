"""Random 2D augmentation of training samples, applied identically to image and label maps.

Samples are ``{image: (C, H, W) float32 in [0, 1], label: (1, H, W) int64}``, C being k adjacent
MRI slices or RGB. Every transform acts in-plane on all channels at once, so the k slices of a
2.5D stack stay aligned with each other and with the mask.

Flips are in-plane too; a left-right flip can swap anatomical side semantics (a left
hippocampus becomes a right one), which is why each family can be switched off.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Mapping

import albumentations as A
import cv2
import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

from medgraft.config.schema import AugmentOptions

BORDER = cv2.BORDER_REFLECT_101
"""Pixels moved in from outside are mirrored, so the mask only ever holds its own labels."""

_SEED_BOUND = 2**31 - 1


def build_pipeline(config: AugmentOptions) -> A.Compose:
    """The albumentations pipeline for ``config`` (flips decided, see
    :meth:`AugmentOptions.for_data`): geometry first, then intensity, then noise."""
    s = config.strength
    steps: list[A.BasicTransform] = []
    if config.flips:
        # A flip probability above 0.5 would only bias the orientation, not add variety.
        steps += [A.HorizontalFlip(p=min(0.5, 0.5 * s)), A.VerticalFlip(p=min(0.5, 0.5 * s))]
    if config.affine:
        steps.append(
            A.Affine(
                scale=(1 - 0.1 * s, 1 + 0.1 * s),
                translate_percent=(-0.0625 * s, 0.0625 * s),
                rotate=(-15 * s, 15 * s),
                border_mode=BORDER,
                p=min(1.0, 0.5 * s),
            )
        )
    if config.elastic:
        steps.append(
            A.ElasticTransform(alpha=30 * s, sigma=5, border_mode=BORDER, p=min(1.0, 0.25 * s))
        )
    if config.intensity:
        steps += [
            A.RandomBrightnessContrast(
                brightness_limit=0.1 * s, contrast_limit=0.1 * s, p=min(1.0, 0.5 * s)
            ),
            A.RandomGamma(gamma_limit=(100 - 20 * s, 100 + 20 * s), p=min(1.0, 0.3 * s)),
        ]
    if config.noise:
        steps.append(A.GaussNoise(std_range=(0.01 * s, 0.03 * s), p=min(1.0, 0.3 * s)))
    return A.Compose(steps)


class Augment2Dd(MapTransform, Randomizable):
    """Augment ``keys[0]`` (the image) and ``keys[1:]`` (label maps) with the same random draw.

    Albumentations 2.x keeps its own RNG, so each call draws a seed from the MONAI random state
    ``self.R`` and reseeds the pipeline with it: ``set_random_state(seed=...)`` (directly or through
    a MONAI ``Compose``), and ``monai.data.DataLoader``, which seeds every ``Randomizable`` in its
    dataset from torch's generator (itself seeded by ``set_determinism``), make runs reproducible.
    """

    def __init__(self, keys: KeysCollection, config: AugmentOptions) -> None:
        super().__init__(keys)
        if config.flips is None:
            raise ValueError("flips not decided: pass AugmentOptions.for_data(volumetric)")
        self.config = config
        self.pipeline = build_pipeline(config) if config.active else None
        self._seed = 0

    def randomize(self, data: object = None) -> None:
        self._seed = int(self.R.randint(_SEED_BOUND))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        if self.pipeline is None:
            return d
        self.randomize()
        # One shared stream for all steps: per-step seeding (``set_random_seed``) would give every
        # step the same draws, e.g. horizontal and vertical flips always firing together.
        self.pipeline.set_random_state(np.random.default_rng(self._seed), random.Random(self._seed))
        image_key, *label_keys = self.keys
        image = d[image_key]
        labels = [d[key] for key in label_keys]
        out = self.pipeline(
            image=_to_hwc(image), masks=[_to_hwc(label)[..., 0] for label in labels]
        )
        d[image_key] = _like(image, np.clip(out["image"], 0.0, 1.0).transpose(2, 0, 1))
        for key, label, mask in zip(label_keys, labels, out["masks"], strict=True):
            d[key] = _like(label, mask[None])
        return d


def _to_hwc(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) tensor → contiguous (H, W, C) float32 array, the layout albumentations expects.

    Label maps go through this too: float32 holds integer labels exactly, and OpenCV cannot warp
    int64.
    """
    return np.ascontiguousarray(image.detach().cpu().numpy().transpose(1, 2, 0), np.float32)


def _like(reference: torch.Tensor, array: np.ndarray) -> torch.Tensor:
    """``array`` as a plain tensor of ``reference``'s dtype and device."""
    return torch.from_numpy(np.ascontiguousarray(array)).to(reference.device, reference.dtype)
