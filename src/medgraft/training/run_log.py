"""What a training run leaves for its researcher: config, run.log, metrics.csv, val_cases.csv,
TensorBoard and curves.png (and, with ``--tracker mlflow``, an MLflow run: ``tracking``).

:class:`RunLog` (config and the run's event lines) belongs to the trainer; :class:`MetricsLogger`
is the handler that writes each epoch's scores. Only the main process writes (``enabled``).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from torch.utils.tensorboard import SummaryWriter

from medgraft.config.loading import save_config
from medgraft.config.schema import TrainConfig
from medgraft.files import append_csv, atomic_write, atomic_write_text, read_csv, write_csv
from medgraft.training.events import Event

if TYPE_CHECKING:
    from medgraft.training.trainer import Trainer


@dataclass
class ValidationScores:
    """Per validation case (rows) and foreground class (columns), each metric computed."""

    metrics: list[str]
    case_ids: list[str] = field(default_factory=list)
    values: dict[str, list[list[float]]] = field(default_factory=dict)

    def add(self, case_id: str, scores: dict[str, list[float]]) -> None:
        self.case_ids.append(case_id)
        for metric in self.metrics:
            self.values.setdefault(metric, []).append(scores[metric])

    def class_means(self, metric: str, num_foreground: int) -> list[float]:
        """Mean per class over the cases, non-finite values left out (a missed class has no
        HD95, which its Dice of 0 already counts); NaN without cases."""
        if not self.case_ids:
            return [math.nan] * num_foreground
        values = np.array(self.values[metric], dtype=float)
        values[~np.isfinite(values)] = np.nan
        with warnings.catch_warnings():  # a class missed in every case: NaN, as intended
            warnings.simplefilter("ignore", RuntimeWarning)
            return [float(v) for v in np.nanmean(values, axis=0)]


@dataclass
class EpochResult:
    """What one epoch measured: training loss and speed, and the validation scores per case."""

    epoch: int
    loss: float
    samples_per_s: float
    seconds: float
    num_foreground: int
    scores: ValidationScores = field(default_factory=lambda: ValidationScores(["dice"]))
    validated: bool = True
    """False for an epoch between validations (``--val-every``): its scores are empty."""

    def class_means(self, metric: str) -> list[float]:
        return self.scores.class_means(metric, self.num_foreground)

    @property
    def dice(self) -> list[float]:
        return self.class_means("dice")

    @property
    def mean_dice(self) -> float:
        finite = [d for d in self.dice if not math.isnan(d)]
        return float(np.mean(finite)) if finite else math.nan


class RunLog:
    """The run's configuration files and ``run.log``, the line-per-event record of a run."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.run_dir = run_dir
        self.enabled = enabled

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


class MetricsLogger:
    """Handler: a row of ``metrics.csv`` and of ``val_cases.csv`` per epoch, TensorBoard
    scalars and ``curves.png``; a resumed run keeps the rows of the epochs it keeps."""

    def __init__(self) -> None:
        self.columns: list[str] = []
        self.metrics: list[str] = []
        self.class_names: list[str] = []
        self.run_dir: Path | None = None
        self.writer: SummaryWriter | None = None

    def attach(self, trainer: Trainer) -> None:
        if not trainer.main:
            return
        trainer.add_event_handler(Event.FIT_STARTED, self.start)
        trainer.add_event_handler(Event.EPOCH_COMPLETED, self.epoch_completed)
        trainer.add_event_handler(Event.FIT_COMPLETED, self.close)
        trainer.add_event_handler(Event.EXCEPTION_RAISED, self.close)

    def start(self, trainer: Trainer) -> None:
        self.run_dir, self.metrics = trainer.run_dir, trainer.val_metrics
        self.class_names = trainer.class_names
        self.columns = metric_columns(self.metrics, self.class_names)
        kept = trainer.state.first_epoch - 1
        _restart_csv(self.run_dir / "metrics.csv", self.columns, kept)
        case_columns = ["epoch", "case", "class", *self.metrics]
        _restart_csv(self.run_dir / "val_cases.csv", case_columns, kept)
        self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=kept + 1)

    def epoch_completed(self, trainer: Trainer, result: EpochResult) -> None:
        """One row of ``metrics.csv`` (its validation cells blank for an epoch between
        validations), the epoch's rows of ``val_cases.csv``, TensorBoard scalars (NaN ones
        left out); ``curves.png`` redrawn."""
        values = epoch_values(trainer, result)
        row = {
            k: "" if k.startswith("val_") and not result.validated else _fmt(v)
            for k, v in values.items()
        }
        append_csv(self.run_dir / "metrics.csv", [row])
        if result.validated:
            append_csv(self.run_dir / "val_cases.csv", self._case_rows(result))
        for name, value in values.items():
            if name != "epoch" and not math.isnan(value):
                self.writer.add_scalar(name, value, result.epoch)
        self.writer.flush()
        self._plot()

    def _case_rows(self, result: EpochResult) -> list[dict[str, str]]:
        scores = result.scores
        return [
            {
                "epoch": str(result.epoch),
                "case": case_id,
                "class": name,
                **{m: _fmt(scores.values[m][row][column]) for m in self.metrics},
            }
            for row, case_id in enumerate(scores.case_ids)
            for column, name in enumerate(self.class_names)
        ]

    def close(self, trainer: Trainer, *_: object) -> None:
        if self.writer is not None:
            self.writer.close()

    def _plot(self) -> None:
        """``curves.png``: training loss per epoch and validation Dice per validated epoch,
        redrawn every epoch."""
        rows = read_csv(self.run_dir / "metrics.csv")
        figure, (loss_axis, dice_axis) = plt.subplots(1, 2, figsize=(10, 4))
        epochs, losses = [int(r["epoch"]) for r in rows], [float(r["train_loss"]) for r in rows]
        loss_axis.plot(epochs, losses, "-o")
        loss_axis.set(title="training loss", xlabel="epoch")
        validated = [r for r in rows if r["val_mean_dice"] != ""]
        for column in [c for c in self.columns if c.startswith("val_dice_")] + ["val_mean_dice"]:
            style = "-o" if column == "val_mean_dice" else "--"
            dice_axis.plot(
                [int(r["epoch"]) for r in validated],
                [float(r[column]) for r in validated],
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


def metric_columns(metrics: list[str], class_names: list[str]) -> list[str]:
    """The columns of ``metrics.csv``, the per-epoch series TensorBoard and MLflow plot too
    (those of validation begin with ``val_``)."""
    per_class = [f"val_{m}_{n}" for m in metrics for n in class_names]
    return ["epoch", "train_loss", "val_mean_dice", *per_class, "lr", "seconds", "samples_per_s"]


def epoch_values(trainer: Trainer, result: EpochResult) -> dict[str, float]:
    """One epoch's row of ``metrics.csv`` as numbers, by column (NaN where nothing was scored)."""
    means = [v for m in trainer.val_metrics for v in result.class_means(m)]
    lr = trainer.scheduler.get_last_lr()[-1]
    values = [result.epoch, result.loss, result.mean_dice, *means, lr]
    values += [result.seconds, result.samples_per_s]
    columns = metric_columns(trainer.val_metrics, trainer.class_names)
    return dict(zip(columns, values, strict=True))


def _restart_csv(path: Path, columns: list[str], keep_epochs: int) -> None:
    """Start a per-epoch CSV afresh, keeping the rows of the first ``keep_epochs`` epochs when
    resuming (written atomically: a crash here must not lose the epochs kept for resume)."""
    kept = [r for r in read_csv(path) if int(r["epoch"]) <= keep_epochs] if keep_epochs else []
    write_csv(path, kept, columns, line_end="\r\n")


def _fmt(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"
