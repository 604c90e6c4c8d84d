"""What a training run leaves for its researcher: config, metrics.csv, TensorBoard, curves.png.

Only the main process writes (``enabled``); the others get a silent log.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from torch.utils.tensorboard import SummaryWriter

from medgraft.config.loading import save_config
from medgraft.config.schema import TrainConfig
from medgraft.files import atomic_write, atomic_write_text


@dataclass
class ValidationScores:
    """Dice and HD95 (mm) per validation case (rows) and foreground class (columns)."""

    case_ids: list[str]
    dice: list[list[float]]
    hd95: list[list[float]]

    def class_means(self, num_foreground: int) -> tuple[list[float], list[float]]:
        """Mean Dice and HD95 per class; HD95 leaves out missed classes (no distance), which
        Dice already counts as 0. NaN without cases."""
        if not self.case_ids:
            nan = [float("nan")] * num_foreground
            return nan, nan
        hd = np.array(self.hd95, dtype=float)
        hd[~np.isfinite(hd)] = np.nan
        with warnings.catch_warnings():  # a class missed in every case: NaN, as intended
            warnings.simplefilter("ignore", RuntimeWarning)
            dice = np.nanmean(np.array(self.dice, dtype=float), axis=0)
            return [float(v) for v in dice], [float(v) for v in np.nanmean(hd, axis=0)]


@dataclass
class EpochResult:
    """What one epoch measured: training loss and speed, and the validation scores per case."""

    epoch: int
    loss: float
    samples_per_s: float
    seconds: float
    num_foreground: int
    scores: ValidationScores = field(default_factory=lambda: ValidationScores([], [], []))

    @property
    def dice(self) -> list[float]:
        return self.scores.class_means(self.num_foreground)[0]

    @property
    def hd95(self) -> list[float]:
        return self.scores.class_means(self.num_foreground)[1]

    @property
    def mean_dice(self) -> float:
        finite = [d for d in self.dice if not math.isnan(d)]
        return float(np.mean(finite)) if finite else float("nan")


CASE_COLUMNS = ["epoch", "case", "class", "dice", "hd95"]


class RunLog:
    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self.columns: list[str] = []
        self.class_names: list[str] = []
        self.writer: SummaryWriter | None = None

    def write_config(self, config: TrainConfig, resolved: dict) -> None:
        """The resolved configuration: ``config.json`` (all) and ``config.yaml`` (the options)."""
        if not self.enabled:
            return
        atomic_write_text(self.run_dir / "config.json", json.dumps(resolved, indent=2))
        save_config(config, self.run_dir / "config.yaml")

    def event(self, message: str) -> None:
        """A line in ``run.log`` (stray labels mapped, resumption, …)."""
        if self.enabled:
            with (self.run_dir / "run.log").open("a") as handle:
                handle.write(message + "\n")

    def start_metrics(self, class_names: list[str], keep_epochs: int = 0) -> None:
        """Start ``metrics.csv`` and ``val_cases.csv``, keeping the first ``keep_epochs`` epochs
        when resuming."""
        if not self.enabled:
            return
        self.columns = [
            "epoch",
            "train_loss",
            "val_mean_dice",
            *[f"val_dice_{n}" for n in class_names],
            *[f"val_hd95_{n}" for n in class_names],
            "lr",
            "seconds",
            "samples_per_s",
        ]
        _restart_csv(self.run_dir / "metrics.csv", self.columns, keep_epochs)
        _restart_csv(self.run_dir / "val_cases.csv", CASE_COLUMNS, keep_epochs)
        self.class_names = class_names
        self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=keep_epochs + 1)

    def epoch(self, result: EpochResult, lr: float) -> None:
        """One row of ``metrics.csv`` and TensorBoard scalars; ``curves.png`` redrawn."""
        if not self.enabled:
            return
        values = [
            result.epoch,
            result.loss,
            result.mean_dice,
            *result.dice,
            *result.hd95,
            lr,
            result.seconds,
            result.samples_per_s,
        ]
        with (self.run_dir / "metrics.csv").open("a", newline="") as handle:
            csv.writer(handle).writerow([_fmt(v) for v in values])
        self._write_case_scores(result)
        for name, value in zip(self.columns[1:], values[1:], strict=True):
            if not math.isnan(value):
                self.writer.add_scalar(name, value, result.epoch)
        self.writer.flush()
        self._plot()

    def _write_case_scores(self, result: EpochResult) -> None:
        scores = result.scores
        with (self.run_dir / "val_cases.csv").open("a", newline="") as handle:
            writer = csv.writer(handle)
            for case_id, dice, hd95 in zip(scores.case_ids, scores.dice, scores.hd95, strict=True):
                for name, d, h in zip(self.class_names, dice, hd95, strict=True):
                    writer.writerow([result.epoch, case_id, name, _fmt(d), _fmt(h)])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def _plot(self) -> None:
        """``curves.png``: training loss and validation Dice per epoch, redrawn every epoch."""
        rows = list(csv.DictReader((self.run_dir / "metrics.csv").open()))
        epochs = [int(r["epoch"]) for r in rows]
        figure, (loss_axis, dice_axis) = plt.subplots(1, 2, figsize=(10, 4))
        loss_axis.plot(epochs, [float(r["train_loss"]) for r in rows], "-o")
        loss_axis.set(title="training loss", xlabel="epoch")
        for column in [c for c in self.columns if c.startswith("val_dice_")] + ["val_mean_dice"]:
            style = "-o" if column == "val_mean_dice" else "--"
            dice_axis.plot(
                epochs,
                [float(r[column]) for r in rows],
                style,
                label=column.removeprefix("val_dice_").replace("val_mean_dice", "mean"),
            )
        dice_axis.set(title="validation Dice", xlabel="epoch", ylim=(0, 1))
        dice_axis.legend()
        for axis in (loss_axis, dice_axis):
            axis.grid(alpha=0.3)
        figure.tight_layout()
        atomic_write(self.run_dir / "curves.png", lambda tmp: figure.savefig(tmp, dpi=100))
        plt.close(figure)


def _restart_csv(path: Path, columns: list[str], keep_epochs: int) -> None:
    """Start a per-epoch CSV afresh, keeping the rows of the first ``keep_epochs`` epochs when
    resuming; written atomically: a crash here must not lose the epochs kept for resume."""
    kept = []
    if keep_epochs and path.exists():
        kept = [r for r in csv.DictReader(path.open()) if int(r["epoch"]) <= keep_epochs]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(kept)

    atomic_write(path, write)


def _fmt(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"
