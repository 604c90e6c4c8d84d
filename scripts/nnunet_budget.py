"""nnU-Net v2 trained on a CPU-time budget, for ``scripts/learning_speed.py``.

Runs inside nnU-Net's own virtual environment (never imports medgraft). ``learning_speed.py``
copies this file into that environment's ``nnunetv2/training/nnUNetTrainer/variants/`` so that
``nnUNetv2_predict -tr nnUNetTrainerCPUBudget`` finds the trainer class, as nnU-Net expects of
custom trainers, then runs ``python -m <that module> BUDGET_JSON [--continue]``.

What differs from the stock ``nnUNetTrainer`` (everything else, network, loss with deep
supervision, augmentation, SGD with poly schedule, is nnU-Net's own):

- epochs and iterations per epoch come from the budget file, sized so the poly schedule ends at
  the last point of the budget (the stock 1000 x 250 would stop at its first percent);
- one validation iteration per epoch (its pseudo Dice is not used) and no final validation:
  the models are scored afterwards by ``medgraft evaluate``, like medgraft's;
- at each CPU-minute point a snapshot ``snapshot_cpu_<MMM>min.pth`` is written, and training
  stops at the last one. The clock is this process's CPU time (user + system, all threads)
  from the first training iteration, minus the validation iterations; resumable: the clock
  reached at each epoch end is kept next to ``checkpoint_latest.pth``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class BudgetSpent(Exception):
    """The last CPU-minute point is reached."""


class nnUNetTrainerCPUBudget(nnUNetTrainer):
    # nnU-Net imports this module again by its package name, so ``python -m`` holds two copies
    # of it: ``main`` catches the exception class of the copy the trainer came from
    Spent = BudgetSpent

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 (nnU-Net's signature)
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        budget_file = os.environ.get("MEDGRAFT_BUDGET")
        budget = json.loads(Path(budget_file).read_text()) if budget_file else {}
        self.num_epochs = budget.get("epochs", self.num_epochs)
        self.num_iterations_per_epoch = budget.get(
            "iterations_per_epoch", self.num_iterations_per_epoch
        )
        self.num_val_iterations_per_epoch = 1
        self.save_every = 1  # checkpoint_latest every epoch: an interruption loses one epoch
        self.points_min: list[int] = budget.get("points_min", [])
        self.clock_started: float | None = None
        self.clock_offset = 0.0
        self.excluded = 0.0
        self.iterations = 0

    # -- the clock -------------------------------------------------------------------------

    def clock(self) -> float:
        """CPU seconds of training so far (validation excluded)."""
        if self.clock_started is None:
            return self.clock_offset
        return self.clock_offset + time.process_time() - self.clock_started - self.excluded

    def _clock_file(self) -> Path:
        return Path(self.output_folder) / "clock.json"

    def resume_clock(self) -> None:
        """Continue the clock of the last finished epoch (what ``checkpoint_latest`` holds)."""
        if self._clock_file().exists():
            saved = json.loads(self._clock_file().read_text())
            self.clock_offset, self.iterations = saved["cpu_seconds"], saved["iterations"]

    def on_train_epoch_start(self) -> None:
        if self.clock_started is None:
            self.clock_started = time.process_time()
        super().on_train_epoch_start()

    def on_validation_epoch_start(self) -> None:
        self._validation_started = time.process_time()
        super().on_validation_epoch_start()

    def on_validation_epoch_end(self, val_outputs: list[dict]) -> None:
        super().on_validation_epoch_end(val_outputs)
        self.excluded += time.process_time() - self._validation_started

    def on_epoch_end(self) -> None:
        epoch_clock = {"cpu_seconds": self.clock(), "iterations": self.iterations}
        super().on_epoch_end()
        (Path(self.output_folder) / "clock.json").write_text(json.dumps(epoch_clock))

    # -- snapshots -------------------------------------------------------------------------

    def train_step(self, batch: dict) -> dict:
        output = super().train_step(batch)
        self.iterations += 1
        now = self.clock()
        for point in self.points_min:
            if now >= point * 60:
                self.snapshot(point)
        if self.points_min and now >= self.points_min[-1] * 60:
            raise self.Spent
        return output

    def snapshot(self, point: int) -> None:
        """The model at a CPU-minute point (once), with where in training it was taken."""
        path = Path(self.output_folder) / f"snapshot_cpu_{point:03d}min.pth"
        if path.exists():
            return
        self.save_checkpoint(str(path))
        record = {"cpu_seconds": self.clock(), "iterations": self.iterations,
                  "epoch": self.current_epoch, "wall_time": time.time()}  # fmt: skip
        path.with_suffix(".json").write_text(json.dumps(record))

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        """Skipped: the snapshots are scored by ``medgraft evaluate`` instead."""


def main() -> None:
    budget_file, resume = sys.argv[1], "--continue" in sys.argv[2:]
    os.environ["MEDGRAFT_BUDGET"] = budget_file
    budget = json.loads(Path(budget_file).read_text())
    torch.set_num_threads(budget.get("threads", 1))
    trainer = get_trainer_from_args(
        budget["dataset"], budget["configuration"], "all", "nnUNetTrainerCPUBudget",
        device=torch.device("cpu"),
    )  # fmt: skip
    maybe_load_checkpoint(trainer, resume, False)
    if resume:
        trainer.resume_clock()
    try:
        trainer.run_training()
    except type(trainer).Spent:
        print(f"budget spent: {trainer.clock() / 60:.1f} CPU-minutes", flush=True)
        return
    # the schedule ended before the last point: the final model stands for it
    if budget["points_min"]:
        trainer.snapshot(budget["points_min"][-1])


if __name__ == "__main__":
    main()
