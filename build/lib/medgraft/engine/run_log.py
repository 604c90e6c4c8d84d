"""What a training run leaves for its researcher: config, metrics.csv, TensorBoard, curves.png.

Only the main process writes (``enabled``); the others get a silent log.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from torch.utils.tensorboard import SummaryWriter


class RunLog:
    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self.columns: list[str] = []
        self.writer: SummaryWriter | None = None

    def write_config(self, resolved: dict) -> None:
        """The resolved configuration: ``config.json`` (all) and ``config.yaml`` (the options)."""
        if not self.enabled:
            return
        from medgraft.engine.config import save_config
        from medgraft.engine.train import TrainConfig

        _atomic_text(self.run_dir / "config.json", json.dumps(resolved, indent=2))
        save_config(TrainConfig(**resolved["train_config"]), self.run_dir / "config.yaml")

    def event(self, message: str) -> None:
        """A line in ``run.log`` (stray labels mapped, resumption, …)."""
        if self.enabled:
            with (self.run_dir / "run.log").open("a") as handle:
                handle.write(message + "\n")

    def start_metrics(self, class_names: list[str], keep_epochs: int = 0) -> None:
        """Start ``metrics.csv``, keeping the first ``keep_epochs`` rows when resuming."""
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
        path = self.run_dir / "metrics.csv"
        kept = []
        if keep_epochs and path.exists():
            kept = [r for r in csv.DictReader(path.open()) if int(r["epoch"]) <= keep_epochs]
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(kept)
        self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=keep_epochs + 1)

    def epoch(
        self,
        epoch: int,
        loss: float,
        mean_dice: float,
        dice: list[float],
        hd95: list[float],
        lr: float,
        seconds: float,
        samples_per_s: float,
    ) -> None:
        if not self.enabled:
            return
        values = [epoch, loss, mean_dice, *dice, *hd95, lr, seconds, samples_per_s]
        with (self.run_dir / "metrics.csv").open("a", newline="") as handle:
            csv.writer(handle).writerow([_fmt(v) for v in values])
        for name, value in zip(self.columns[1:], values[1:], strict=True):
            if not math.isnan(value):
                self.writer.add_scalar(name, value, epoch)
        self.writer.flush()
        self._plot()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def _plot(self) -> None:
        """``curves.png``: training loss and validation Dice per epoch, redrawn every epoch."""
        rows = list(csv.DictReader((self.run_dir / "metrics.csv").open()))
        epochs = [int(r["epoch"]) for r in rows]
        figure, (loss_axis, dice_axis) = plt.subplots(1, 2, figsize=(10, 4))
        loss_axis.plot(epochs, [float(r["train_loss"]) for r in rows], "-o")
        loss_axis.set(title="training loss (DiceCE)", xlabel="epoch")
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
        tmp = self.run_dir / ".curves.tmp.png"
        figure.savefig(tmp, dpi=100)
        plt.close(figure)
        os.replace(tmp, self.run_dir / "curves.png")


def _fmt(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
