"""Training losses by name: ``--loss NAME`` or ``loss: NAME`` in a recipe picks one.

A new loss is one function registered here with :func:`register_loss`; it receives the run's
options (for its weights) and returns a module called as ``loss(logits, target)`` with
logits ``(N, C, H, W)`` and integer targets ``(N, 1, H, W)``. A trainer variant that needs
more overrides ``Trainer.build_loss`` instead, as deep supervision does (its loss weighs the
outputs of several decoder stages).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.losses import DiceCELoss, DiceFocalLoss
from torch import nn

from medgraft.config.schema import TrainConfig
from medgraft.errors import MedgraftError

LossBuilder = Callable[[TrainConfig], nn.Module]
LOSSES: dict[str, LossBuilder] = {}


def register_loss(name: str) -> Callable[[LossBuilder], LossBuilder]:
    """Decorator: make a loss builder selectable as ``--loss name``."""

    def register(builder: LossBuilder) -> LossBuilder:
        LOSSES[name] = builder
        return builder

    return register


@register_loss("dice_ce")
def dice_ce(config: TrainConfig) -> nn.Module:
    """Soft Dice + cross-entropy (MONAI ``DiceCELoss``), nnU-Net's default."""
    return DiceCELoss(
        to_onehot_y=True,
        softmax=True,
        lambda_dice=config.lambda_dice,
        lambda_ce=config.lambda_ce,
    )


@register_loss("dice_ce_batch")
def dice_ce_batch(config: TrainConfig) -> nn.Module:
    """``dice_ce`` with the soft Dice summed over the whole batch (nnU-Net's batch Dice for 2D
    plans). Per-sample Dice gives every sampled slice without a structure a 0/0 term whose loss
    stays near 1 until the network drives its probabilities there to exact zeros."""
    return DiceCELoss(
        to_onehot_y=True,
        softmax=True,
        batch=True,
        lambda_dice=config.lambda_dice,
        lambda_ce=config.lambda_ce,
    )


@register_loss("dice_focal")
def dice_focal(config: TrainConfig) -> nn.Module:
    """Soft Dice + focal loss (MONAI ``DiceFocalLoss``, gamma 2): the focal term down-weights
    easy background pixels, for small or thin structures. ``lambda_ce`` weighs the focal term."""
    return DiceFocalLoss(
        to_onehot_y=True,
        softmax=True,
        gamma=2.0,
        lambda_dice=config.lambda_dice,
        lambda_focal=config.lambda_ce,
    )


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


def build_loss(config: TrainConfig) -> nn.Module:
    """The loss ``config.loss`` names; an unknown name lists the registered ones."""
    if config.loss not in LOSSES:
        raise MedgraftError(
            f"unknown loss '{config.loss}'; choose from {', '.join(sorted(LOSSES))}"
        )
    return LOSSES[config.loss](config)
