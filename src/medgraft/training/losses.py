"""Training losses by name: ``--loss NAME`` or ``loss: NAME`` in a recipe picks one.

A new loss is one function registered here with :func:`register_loss`; it receives the run's
options (for its weights) and returns a module called as ``loss(logits, target)`` with
logits ``(N, C, H, W)`` and integer targets ``(N, 1, H, W)``. A trainer variant that needs
more (e.g. deep supervision over decoder stages) overrides ``Trainer.build_loss`` instead.
"""

from __future__ import annotations

from collections.abc import Callable

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


def build_loss(config: TrainConfig) -> nn.Module:
    """The loss ``config.loss`` names; an unknown name lists the registered ones."""
    if config.loss not in LOSSES:
        raise MedgraftError(
            f"unknown loss '{config.loss}'; choose from {', '.join(sorted(LOSSES))}"
        )
    return LOSSES[config.loss](config)
