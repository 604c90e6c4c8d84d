"""The CPU-clock trainer of the learning-speed study (``--trainer cpu-budget``).

It trains on the training cases alone (the fold's validation cases are scored afterwards from
the snapshots, so no epoch validates) and keeps a snapshot of the model at each point of
``--cpu-budget-minutes``, measured in CPU time of this process (user + system, all threads;
``time.process_time``) from its first training iteration on. Training stops at the last point;
if the learning-rate schedule ends first, the final model stands for the remaining points.
The clock survives ``--resume`` (``snapshots/clock.json``, written with each epoch's ``last.pt``).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from medgraft.config.schema import TrainConfig
from medgraft.data.discovery import DatasetSpec
from medgraft.errors import MedgraftError
from medgraft.models.checkpoint import save_checkpoint
from medgraft.runtime import console
from medgraft.training.events import Event, Handler
from medgraft.training.run_log import EpochResult
from medgraft.training.trainer import Trainer


def budget_points(config: TrainConfig) -> list[int]:
    """``--cpu-budget-minutes`` as ascending whole minutes."""
    text = config.cpu_budget_minutes or ""
    try:
        points = sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError:
        points = []
    if not points or points[0] <= 0:
        raise MedgraftError(
            f"--trainer cpu-budget needs --cpu-budget-minutes, positive whole minutes "
            f"separated by commas (e.g. 5,15,30,60), not {text!r}"
        )
    return points


class CPUClockSnapshots:
    """Handler: the CPU clock, a snapshot at each point, the stop at the last one."""

    def __init__(self, points_min: list[int]) -> None:
        self.points_min = points_min
        self.offset = 0.0
        """CPU seconds spent before a resume."""
        self.started: float | None = None
        self.iterations = 0
        self.at_epoch_end: dict[str, float] = {}

    def attach(self, trainer: Trainer) -> None:
        trainer.add_event_handler(Event.FIT_STARTED, self.restore_clock)
        trainer.add_event_handler(Event.EPOCH_STARTED, self.start_clock)
        trainer.add_event_handler(Event.ITERATION_COMPLETED, self.iteration_completed)
        # the clock as the epoch ended, read before checkpoints are written, saved after them
        trainer.add_event_handler(Event.EPOCH_COMPLETED, self.read_clock, first=True)
        trainer.add_event_handler(Event.EPOCH_COMPLETED, self.save_clock)
        trainer.add_event_handler(Event.FIT_COMPLETED, self.fit_completed)

    def clock(self) -> float:
        """CPU seconds of training so far, across resumes."""
        return self.offset + time.process_time() - (self.started or time.process_time())

    @staticmethod
    def clock_file(trainer: Trainer) -> Path:
        return trainer.run_dir / "snapshots" / "clock.json"

    def restore_clock(self, trainer: Trainer) -> None:
        if trainer.resume_state is not None:
            saved = json.loads(self.clock_file(trainer).read_text())
            self.offset, self.iterations = saved["cpu_seconds"], saved["iterations"]

    def start_clock(self, trainer: Trainer) -> None:
        if self.started is None:
            self.started = time.process_time()

    def iteration_completed(self, trainer: Trainer) -> None:
        self.iterations += 1
        now = self.clock()
        for point in self.points_min:
            if now >= point * 60:
                self.snapshot(trainer, point)
        if now >= self.points_min[-1] * 60:
            console.print(f"budget spent at {now / 60:.1f} CPU-minutes")
            trainer.terminate()

    def read_clock(self, trainer: Trainer, result: EpochResult) -> None:
        self.at_epoch_end = {"cpu_seconds": self.clock(), "iterations": self.iterations}

    def save_clock(self, trainer: Trainer, result: EpochResult) -> None:
        self.clock_file(trainer).parent.mkdir(exist_ok=True)
        self.clock_file(trainer).write_text(json.dumps(self.at_epoch_end))

    def fit_completed(self, trainer: Trainer) -> None:
        if not trainer.state.terminated:  # the schedule ended first: the final model stands
            self.snapshot(trainer, self.points_min[-1])

    def snapshot(self, trainer: Trainer, point: int) -> None:
        path = trainer.run_dir / "snapshots" / f"cpu_{point:03d}min.pt"
        if path.exists():
            return
        path.parent.mkdir(exist_ok=True)
        save_checkpoint(trainer.checkpoint(trainer.state.epoch, math.nan), path)
        record = {"cpu_seconds": self.clock(), "iterations": self.iterations,
                  "epoch": trainer.state.epoch, "wall_time": time.time()}  # fmt: skip
        path.with_suffix(".json").write_text(json.dumps(record))


class CPUBudgetTrainer(Trainer):
    """Trains on a CPU-time budget with snapshots; validation is left to the snapshots."""

    def select_cases(self, spec: DatasetSpec) -> tuple[list[dict], list[dict]]:
        train, _ = super().select_cases(spec)
        return train, []

    def handlers(self) -> list[Handler]:
        return [*super().handlers(), CPUClockSnapshots(budget_points(self.config))]
