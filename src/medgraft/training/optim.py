"""Optimiser, learning-rate schedule and encoder freezing for transfer learning."""

from __future__ import annotations

import torch
from torch import nn

from medgraft.config.schema import TrainConfig
from medgraft.models.unet import Segmenter
from medgraft.training.schedules import lr_factor


def parameter_groups(model: nn.Module, lr: float, encoder_lr_mult: float) -> list[dict]:
    """Encoder parameters at ``lr * encoder_lr_mult``, the decoder and heads at ``lr``;
    ``model`` is a :class:`Segmenter` or a training wrapper that exposes its ``encoder``
    (deep supervision's)."""
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    rest = [p for p in model.parameters() if id(p) not in encoder_ids]
    return [
        {"params": list(model.encoder.parameters()), "lr": lr * encoder_lr_mult, "name": "encoder"},
        {"params": rest, "lr": lr, "name": "decoder"},
    ]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with the encoder's own learning rate (``--encoder-lr-mult``)."""
    return torch.optim.AdamW(
        parameter_groups(model, config.lr, config.encoder_lr_mult),
        weight_decay=config.weight_decay,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedule over the whole run: warm-up, then the ``--schedule`` decay."""
    factor = lr_factor(
        config.schedule,
        config.warmup_epochs * steps_per_epoch,
        config.epochs * steps_per_epoch,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def set_encoder_frozen(model: Segmenter, frozen: bool) -> None:
    """smp's freeze: no encoder gradients and its BatchNorm statistics kept as pretrained; the
    whole encoder is put in eval mode too (no dropout or drop-path while frozen), which smp's
    ``train()`` then leaves alone. Call after ``model.train()``: unfreezing puts the encoder
    back in the model's mode."""
    if frozen:
        model.unet.freeze_encoder()
        model.encoder.eval()
    else:
        model.unet.unfreeze_encoder()
        model.encoder.train(model.training)
