"""Losses by name: the registry, and training with the second loss end to end."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from conftest import invoke

from medgraft.config.schema import TrainConfig
from medgraft.errors import MedgraftError
from medgraft.models.checkpoint import load_checkpoint
from medgraft.training.losses import LOSSES, build_loss


def config(**options) -> TrainConfig:
    return TrainConfig(data="d", output="o", **options)


@pytest.mark.parametrize("name", ["dice_ce", "dice_ce_batch", "dice_focal"])
def test_each_loss_rewards_the_right_answer(name: str) -> None:
    target = torch.zeros(2, 1, 16, 16, dtype=torch.long)
    target[:, :, 4:12, 4:12] = 1
    right = torch.nn.functional.one_hot(target[:, 0], 2).permute(0, 3, 1, 2).float() * 8 - 4
    loss = build_loss(config(loss=name))
    assert loss(right, target) < loss(-right, target)
    assert math.isfinite(float(loss(torch.zeros(2, 2, 16, 16), target)))


def test_focal_term_is_weighted_by_lambda_ce() -> None:
    target = torch.randint(0, 2, (1, 1, 8, 8))
    logits = torch.randn(1, 2, 8, 8)
    dice_only = build_loss(config(loss="dice_focal", lambda_ce=0.0))(logits, target)
    both = build_loss(config(loss="dice_focal", lambda_ce=1.0))(logits, target)
    assert both > dice_only


def test_batch_dice_gives_no_loss_to_a_slice_without_the_structure() -> None:
    """A right answer with ordinary confidence: per-sample Dice still charges the empty slice
    (0/0 term near 1), batch Dice does not."""
    target = torch.zeros(2, 1, 16, 16, dtype=torch.long)
    target[0, :, 4:12, 4:12] = 1  # the second slice holds no structure
    right = torch.nn.functional.one_hot(target[:, 0], 2).permute(0, 3, 1, 2).float() * 8 - 4
    per_sample = build_loss(config(loss="dice_ce", lambda_ce=0.0))(right, target)
    batch = build_loss(config(loss="dice_ce_batch", lambda_ce=0.0))(right, target)
    assert per_sample > 0.2 and batch < 0.02


def test_unknown_loss_lists_the_registered_ones() -> None:
    with pytest.raises(MedgraftError, match="dice_ce, dice_ce_batch, dice_focal"):
        build_loss(config(loss="dice_tversky"))


class CountingCrossEntropy(torch.nn.Module):
    """Cross-entropy that counts its calls: proof that training used it."""

    calls = 0

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        CountingCrossEntropy.calls += 1
        return torch.nn.functional.cross_entropy(logits, target[:, 0].long())


@pytest.mark.slow
def test_a_new_loss_is_one_registered_function(micro_msd: Path, runner, tmp_path: Path) -> None:
    """Registered as one function, it is a --loss choice and is what a training step calls."""
    LOSSES.register("ce_counting")(lambda options: CountingCrossEntropy())
    try:
        wrong = invoke(
            runner,
            "train",
            "--recipe",
            "none",
            "--data",
            "d",
            "--output",
            "o",
            "--loss",
            "ce_count",
        )
        assert "choose from dice_ce, dice_ce_batch, dice_focal, ce_counting" in str(wrong.exception)
        result = invoke(
            runner, "train", "--recipe", "none",
            "--data", micro_msd, "--output", tmp_path / "run", "--epochs", "1",
            "--loss", "ce_counting", "--batch-size", "16", "--samples-per-epoch", "32",
            "--val-fraction", "0.25",
        )  # fmt: skip
    finally:
        LOSSES.remove("ce_counting")
    assert result.exit_code == 0, result.output
    assert CountingCrossEntropy.calls == 2  # one per training step: 32 samples, batch 16
    assert load_checkpoint(tmp_path / "run").train_config["loss"] == "ce_counting"


@pytest.mark.slow
def test_training_with_dice_focal(micro_msd: Path, runner, tmp_path: Path) -> None:
    run = tmp_path / "focal"
    result = invoke(
        runner, "train", "--recipe", "none",
        "--data", micro_msd, "--output", run, "--loss", "dice_focal",
        "--epochs", "2", "--batch-size", "8", "--val-fraction", "0.25", "--seed", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert load_checkpoint(run).train_config["loss"] == "dice_focal"
    losses = [float(r["train_loss"]) for r in csv.DictReader((run / "metrics.csv").open())]
    assert len(losses) == 2 and losses[1] < losses[0]
