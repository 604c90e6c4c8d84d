"""Training inside a region of interest (DRIVE's field of view): pixels outside it are ignored."""

from __future__ import annotations

import torch
from torch import nn

CERTAIN_LOGIT = 30.0
"""Softmax of (30, 0, …) is 1 - 1e-13 per extra class: a certain prediction in any dtype."""


def ignore_outside(logits: torch.Tensor, target: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
    """Logits whose pixels outside the region of interest (``roi`` 0) predict their target
    with certainty: there they add no gradient and almost no loss, whatever the loss (cross-
    entropy, focal, soft Dice: foreground sums see zeros on both sides outside). MONAI's
    ``MaskedLoss`` zeroes the logits instead, which leaves a uniform softmax in every Dice sum.
    Coarser logits (deep supervision) get the target and region resized to them, by nearest
    neighbour as ``DeepSupervisionLoss`` resizes the target."""
    if logits.shape[2:] != target.shape[2:]:
        size = logits.shape[2:]  # interpolate takes float maps; they hold 0/1 and labels exactly
        target = nn.functional.interpolate(target.float(), size=size, mode="nearest-exact")
        roi = nn.functional.interpolate(roi.float(), size=size, mode="nearest-exact")
    certain = torch.nn.functional.one_hot(target[:, 0].long(), logits.shape[1])
    certain = certain.permute(0, 3, 1, 2).to(logits.dtype) * CERTAIN_LOGIT
    return torch.where(roi > 0, logits, certain)
