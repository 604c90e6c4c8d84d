"""Training losses by name: ``--loss NAME`` or ``loss: NAME`` in a recipe picks one.

A new loss is one function registered in :data:`LOSSES`; it receives the run's options (for its
weights) and returns a module called as ``loss(logits, target)`` with logits ``(N, C, H, W)`` and
integer targets ``(N, 1, H, W)``. A trainer variant that needs more overrides
``Trainer.build_loss`` instead, as deep supervision does (its loss weighs the outputs of several
decoder stages). MONAI is imported inside the builders, so the CLI lists the names without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medgraft.config.schema import TrainConfig
from medgraft.registry import Registry

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import nn

    LossBuilder = Callable[[TrainConfig], nn.Module]

LOSSES: Registry[LossBuilder] = Registry("loss", "--loss")


@LOSSES.register("dice_ce")
def dice_ce(config: TrainConfig) -> nn.Module:
    """Soft Dice + cross-entropy (MONAI DiceCELoss), nnU-Net's default."""
    from monai.losses import DiceCELoss

    return DiceCELoss(
        to_onehot_y=True,
        softmax=True,
        lambda_dice=config.lambda_dice,
        lambda_ce=config.lambda_ce,
    )


@LOSSES.register("dice_ce_batch")
def dice_ce_batch(config: TrainConfig) -> nn.Module:
    """dice_ce with the soft Dice summed over the whole batch (nnU-Net's batch Dice).

    Per-sample Dice gives every sampled slice without a structure a 0/0 term whose loss stays
    near 1 until the network drives its probabilities there to exact zeros.
    """
    from monai.losses import DiceCELoss

    return DiceCELoss(
        to_onehot_y=True,
        softmax=True,
        batch=True,
        lambda_dice=config.lambda_dice,
        lambda_ce=config.lambda_ce,
    )


@LOSSES.register("dice_focal")
def dice_focal(config: TrainConfig) -> nn.Module:
    """Soft Dice + focal loss (MONAI DiceFocalLoss, gamma 2), for small or thin structures.

    The focal term down-weights easy background pixels; ``lambda_ce`` weighs it.
    """
    from monai.losses import DiceFocalLoss

    return DiceFocalLoss(
        to_onehot_y=True,
        softmax=True,
        gamma=2.0,
        lambda_dice=config.lambda_dice,
        lambda_focal=config.lambda_ce,
    )


def build_loss(config: TrainConfig) -> nn.Module:
    """The loss ``config.loss`` names; an unknown name lists the registered ones."""
    return LOSSES.get(config.loss)(config)
