"""Segmentation metrics, computed with MONAI."""

from __future__ import annotations

import torch
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot


def dice_per_class(pred: torch.Tensor, truth: torch.Tensor, num_classes: int) -> list[float]:
    """Dice of each foreground class for one case; NaN where the class is absent from ``truth``.

    ``pred`` and ``truth`` are integer label maps of the same spatial shape (no channel axis).
    """
    if pred.shape != truth.shape:
        raise ValueError(
            f"prediction shape {tuple(pred.shape)} != truth shape {tuple(truth.shape)}"
        )
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    scores = metric(
        one_hot(pred[None, None].long(), num_classes),
        one_hot(truth[None, None].long(), num_classes),
    )
    return [float(v) for v in scores[0]]
