"""Where a fold's time goes: one real CV fold of a shipped recipe, timed per phase.

The code of ``scripts/profile_fold.py`` (its docstring says how to run it). The fold trains
in this process with :class:`ProfiledTrainer`, the default trainer with a clock around each
phase, on the accuracy CV's split with the options ``medgraft train`` takes on this machine (on
the CPU the CV's own: each row records the run's options fingerprint, which ``folds.csv`` holds
for the CV's fold; on a CUDA device the recipe's cuda profile). Each phase's wall and CPU
seconds are exclusive: a phase entered inside another (the plot inside the run log's epoch line)
pauses the outer one, so the phases add up to the run's time. ``other`` is what no phase
holds: progress bars, events, the loop itself.

CPU seconds are this process's (``time.process_time``, all its threads); DataLoader workers'
are not counted, so a profile with ``--num-workers`` above 0 records the workers' count.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medgraft.config.loading import options_sha256
from medgraft.config.schema import TrainConfig
from medgraft.files import append_csv
from medgraft.lab.accuracy_cv import DATASETS, FOLDS
from medgraft.provenance import Measurement
from medgraft.training.events import Handler
from medgraft.training.handlers import CheckpointSaver, EpochReporter
from medgraft.training.run_log import MetricsLogger, ValidationScores
from medgraft.training.trainer import Trainer, TrainResult

PHASES = (
    "setup", "data loading", "training steps", "validation", "checkpoints", "logs", "plots",
    "other",
)  # fmt: skip
"""Every phase a profile reports, in the order of its rows."""

HANDLER_PHASES: dict[type, dict[str, str]] = {
    MetricsLogger: {"start": "logs", "epoch_completed": "logs", "_plot": "plots"},
    CheckpointSaver: {"epoch_completed": "checkpoints"},
    EpochReporter: {"epoch_completed": "logs"},
}
"""The phase of each handler function the run attaches (``_plot`` is called inside the run
log's ``epoch_completed``, so its time is taken out of ``logs``)."""


class PhaseClock:
    """Exclusive wall and CPU seconds per phase."""

    def __init__(self) -> None:
        self.wall = dict.fromkeys(PHASES, 0.0)
        self.cpu = dict.fromkeys(PHASES, 0.0)
        self._open: list[list[Any]] = []
        """The phases entered and not left, innermost last: [name, wall start, CPU start]."""

    def _charge(self, until: tuple[float, float]) -> None:
        """The innermost open phase's time up to ``until``, added to its totals."""
        name, wall, cpu = self._open[-1]
        self.wall[name] += until[0] - wall
        self.cpu[name] += until[1] - cpu

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        now = (time.perf_counter(), time.process_time())
        if self._open:
            self._charge(now)  # the outer phase pauses
        self._open.append([name, *now])
        try:
            yield
        finally:
            now = (time.perf_counter(), time.process_time())
            self._charge(now)
            self._open.pop()
            if self._open:
                self._open[-1][1:] = now  # and continues from here

    def timed(self, function: Callable[..., Any], name: str) -> Callable[..., Any]:
        def within_phase(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return function(*args, **kwargs)

        return within_phase


class TimedLoader:
    """The trainer's DataLoader, each batch's wait (and the workers' start) as data loading."""

    def __init__(self, loader: Any, clock: PhaseClock) -> None:
        self.loader, self.clock = loader, clock

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        with self.clock.phase("data loading"):
            batches = iter(self.loader)
        while True:
            with self.clock.phase("data loading"):
                batch = next(batches, None)
            if batch is None:
                return
            yield batch


class ProfiledTrainer(Trainer):
    """The default trainer with each phase on a :class:`PhaseClock` (``self.clock``)."""

    def __init__(self, config: TrainConfig) -> None:
        self.clock = PhaseClock()
        super().__init__(config)

    def handlers(self) -> list[Handler]:
        found = super().handlers()
        for handler in found:
            for method, name in HANDLER_PHASES.get(type(handler), {}).items():
                setattr(handler, method, self.clock.timed(getattr(handler, method), name))
        return found

    def setup(self) -> None:
        with self.clock.phase("setup"):
            super().setup()

    def build_loader(self) -> None:
        super().build_loader()
        self.loader = TimedLoader(self.loader, self.clock)

    def train_step(self, batch: dict) -> float:
        with self.clock.phase("training steps"):
            return super().train_step(batch)

    def validate(self) -> ValidationScores:
        with self.clock.phase("validation"):
            return super().validate()

    def fit(self) -> TrainResult:
        with self.clock.phase("other"):
            return super().fit()


def profile_rows(config: TrainConfig, clock: PhaseClock, dataset: str) -> list[dict[str, str]]:
    """One row per phase of one run (a view's, for a views recipe)."""
    total = sum(clock.wall.values())
    return [
        {
            "dataset": dataset, "recipe": config.recipe or "", "fold": str(config.fold),
            "view": config.slice_axis if config.views else "", "epochs": str(config.epochs),
            "val_every": str(config.val_every), "num_workers": str(config.num_workers),
            "recipe_profile": config.recipe_profile or "", "device": config.device,
            "options_sha256": options_sha256(config), "phase": phase,
            "phase_wall_seconds": f"{clock.wall[phase]:.2f}",
            "phase_cpu_seconds": f"{clock.cpu[phase]:.2f}",
            "wall_share": f"{clock.wall[phase] / total:.4f}" if total else "",
        }
        for phase in PHASES
    ]  # fmt: skip


def profile_fold(
    dataset: str, data: Path, output: Path, fold: int, csv: Path, change: dict | None = None
) -> list[dict[str, str]]:
    """Train the dataset's recipe on CV fold ``fold`` (with ``change``'s options) into
    ``output``, each run profiled; append the rows, with the machine, versions and load, to
    ``csv`` and return them."""
    from medgraft.config.resolve import train_configs
    from medgraft.runtime import is_cuda

    flags = {"data": str(data), "output": str(output), "folds": FOLDS, "offline": True}
    options = flags | DATASETS[dataset]["options"] | (change or {})
    recipe = DATASETS[dataset]["recipe"]
    configs = train_configs(options, recipe=recipe, fold=str(fold), on_cuda=is_cuda)
    profiled: list[tuple[TrainConfig, PhaseClock]] = []
    with Measurement() as measured:
        for config in configs:
            trainer = ProfiledTrainer(config)
            trainer.fit()
            profiled.append((trainer.config, trainer.clock))
    record = measured.record()
    rows = [
        {**record, **row}
        for config, clock in profiled
        for row in profile_rows(config, clock, dataset)
    ]
    append_csv(csv, rows)
    return rows


def main() -> None:
    import argparse
    import os

    from medgraft.lab import CHECKOUT
    from medgraft.lab.accuracy_cv import dataset_folder

    parser = argparse.ArgumentParser(description="Where one CV fold's time goes, per phase.")
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("runs/profile"))
    parser.add_argument("--csv", type=Path, default=Path("docs/results/speed/fold_profile.csv"))
    args = parser.parse_args()
    os.chdir(CHECKOUT)
    output = args.work / args.dataset
    if output.exists():
        parser.error(f"{output} exists: a profile trains from scratch; remove it or pass --work")
    rows = profile_fold(args.dataset, dataset_folder(args.dataset), output, args.fold, args.csv)
    for row in rows:
        share = float(row["wall_share"] or 0)
        print(
            f"{row['view'] or 'run'}: {row['phase']:>14} {row['phase_wall_seconds']:>9} s wall "
            f"({share:.1%}), {row['phase_cpu_seconds']:>9} s CPU"
        )
    print(f"appended {len(rows)} rows to {args.csv}")
