"""The transfer study: does ImageNet (or an earlier run) beat scratch, and with how few labels?

Every init x label fraction x seed is an ordinary training run
(:func:`medgraft.training.trainer.run_training`, no second loop) on a split fixed for the whole
study: one validation set, and a training pool in a fixed random order of which fraction ``f``
takes the first cases, so 10% ⊂ 25% ⊂ … ⊂ 100%.
Resumable: a run that finished left a ``result.json`` and is skipped; one that was interrupted
continues from its ``last.pt``. Each missing run is a ``medgraft train`` job of a launcher
(``medgraft.launchers``): here in turn, or on a Slurm cluster.
"""

from __future__ import annotations

import csv
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medgraft.config.loading import (
    load_config_file,
    options_sha256,
    overlay_options,
    resolve_options,
    save_config,
)
from medgraft.config.reuse import reuse_finished_run
from medgraft.config.schema import (
    QUICK_STUDY,
    QUICK_STUDY_TRAINING,
    DemoOptions,
    StudyOptions,
    TrainConfig,
)
from medgraft.data.discovery import discover_dataset
from medgraft.data.records import CaseRecord
from medgraft.data.splits import split_cases
from medgraft.errors import MedgraftError
from medgraft.evaluation.stats import (
    BEHIND,
    RESAMPLES,
    Interval,
    difference_interval,
    mean_interval,
)
from medgraft.files import atomic_write, atomic_write_text, read_csv, write_csv
from medgraft.launchers import Job, Launcher

SCRATCH = "none"
IMAGENET = "imagenet"
REACH_SHARE = 0.9
"""``epochs_to_90``: the first epoch whose validation Dice reaches this share of the last's."""


@dataclass
class StudyPlan:
    """What to compare (see :class:`StudyOptions` for the defaults); ``train_options`` are any
    other :class:`TrainConfig` fields, as a config file holds them."""

    data: str
    output: str
    inits: list[str]
    fractions: list[float]
    seeds: int
    epochs: int
    val_fraction: float
    split_seed: int = 0
    train_options: dict = field(default_factory=dict)
    command: str = ""
    redo_changed: bool = False

    @classmethod
    def from_options(
        cls, data: str, output: str, options: StudyOptions, train_options: dict | None = None
    ) -> StudyPlan:
        """A plan from the study's options (comma-separated lists parsed)."""
        try:
            fractions = [float(f) for f in options.fractions.split(",") if f.strip()]
        except ValueError as exc:
            raise MedgraftError(f"--fractions must be numbers, not '{options.fractions}'") from exc
        return cls(
            data=data,
            output=output,
            inits=[i.strip() for i in options.inits.split(",") if i.strip()],
            fractions=fractions,
            seeds=options.seeds,
            epochs=options.epochs,
            val_fraction=options.val_fraction,
            train_options=dict(train_options or {}),
            redo_changed=options.redo_changed,
        )

    def check(self) -> None:
        if not self.inits:
            raise MedgraftError("--inits names no initialisation")
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise MedgraftError(f"--fractions must lie in (0, 1], got {self.fractions}")
        if self.seeds < 1:
            raise MedgraftError("--seeds must be at least 1")
        labels = [init_label(i) for i in self.inits]
        if len(set(labels)) != len(labels):
            raise MedgraftError(f"--inits name the same initialisation twice: {self.inits}")


def plan_from_cli(
    output: Path,
    data: Path | None,
    typed: dict,
    *,
    quick: bool = False,
    config_file: Path | None = None,
    command: str = "",
) -> StudyPlan:
    """The plan ``medgraft study`` runs: the schema's defaults < ``--quick``'s < typed flags;
    training options: the study's encoder/offline/device < ``--config`` < those flags typed."""
    if data is None and not quick:
        raise MedgraftError("--data is required (or use --quick for the embedded demo data)")
    layers = [QUICK_STUDY, typed] if quick else [typed]
    options = StudyOptions(**resolve_options(layers, config_class=StudyOptions))
    shared = {k: getattr(options, k) for k in ("encoder", "offline", "device")}
    train_options = overlay_options(
        [
            shared,
            QUICK_STUDY_TRAINING if quick else {},
            load_config_file(config_file) if config_file else {},
            {k: v for k, v in typed.items() if k in shared},
        ]
    )
    plan = StudyPlan.from_options(
        str(data or DemoOptions().data), str(output), options, train_options
    )
    plan.command = command
    return plan


def init_label(init: str) -> str:
    """``imagenet``, ``none`` or ``from-<run folder name>``: names runs, rows and plot lines."""
    if init in (IMAGENET, SCRATCH):
        return init
    path = Path(init)
    name = path.parent.name if path.is_file() else path.name
    return f"from-{name or 'run'}"


def study_split(records: list[CaseRecord], plan: StudyPlan) -> dict[str, list[str]]:
    """Validation cases and the ordered training pool, stored in ``split.json`` and reused."""
    path = Path(plan.output) / "split.json"
    ids = sorted(r.case_id for r in records)
    if path.exists():
        stored = json.loads(path.read_text())
        if sorted(stored["val"] + stored["pool"]) != ids:
            raise MedgraftError(
                f"{path}: this study was started on other cases; use a new --output"
            )
        return stored
    train_records, val_records = split_cases(records, plan.val_fraction, plan.split_seed)
    pool = [r.case_id for r in train_records]
    np.random.default_rng(plan.split_seed).shuffle(pool)
    split = {"val": [r.case_id for r in val_records], "pool": pool}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(split, indent=1))
    return split


def fraction_cases(pool: list[str], fraction: float) -> list[str]:
    """The first share of the pool: nested across fractions by construction."""
    return pool[: max(1, round(fraction * len(pool)))]


@dataclass
class PlannedRun:
    """One init x fraction x seed of the plan: its row's keys and its training options."""

    init: str
    fraction: float
    train_cases: int
    config: TrainConfig


def planned_runs(plan: StudyPlan, split: dict[str, list[str]]) -> list[PlannedRun]:
    """Every run of the plan, in the order of its results; each fraction's split file written."""
    output, runs = Path(plan.output), []
    for fraction in plan.fractions:
        cases = fraction_cases(split["pool"], fraction)
        split_file = output / "splits" / f"fraction-{fraction:g}.json"
        split_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(split_file, json.dumps({"train": cases, "val": split["val"]}, indent=1))
        for init in plan.inits:
            for seed in range(plan.seeds):
                run_dir = output / "runs" / f"{init_label(init)}-f{fraction:g}-s{seed}"
                config = run_config(plan, init, seed, split_file, run_dir)
                runs.append(PlannedRun(init_label(init), fraction, len(cases), config))
    return runs


def run_study(plan: StudyPlan, launcher: Launcher) -> list[dict] | None:
    """Train every missing combination as a ``medgraft train`` job of ``launcher`` (here in
    turn, or on Slurm), then write results, summary and plots; None while Slurm jobs are still
    pending or running (``--no-wait``: the same command gathers them later)."""
    plan.check()
    output = Path(plan.output)
    spec = discover_dataset(plan.data)
    runs = planned_runs(plan, study_split(spec.training, plan))
    rows = {run.config.output: _finished_run(run.config, plan.redo_changed) for run in runs}
    jobs = [training_job(run.config) for run in runs if rows[run.config.output] is None]
    if jobs:
        launched = launcher.run(jobs)
        launched.raise_failures()
        if launched.waiting:
            return None
    finished = [
        rows[run.config.output] or _record_run(run.config, run.init, run.fraction, run.train_cases)
        for run in runs
    ]
    write_results(finished, plan, output)
    return finished


def training_job(config: TrainConfig) -> Job:
    """``medgraft train`` of one run with exactly ``config``'s options (saved beside the run as
    ``study_job.yaml``, since some options have no flag), finished once ``training_finished``."""
    job_file = Path(config.output) / "study_job.yaml"
    job_file.parent.mkdir(parents=True, exist_ok=True)
    save_config(config, job_file)
    return Job(
        Path(config.output).name,
        ["train", "--config", str(job_file.resolve())],
        lambda: training_finished(config),
    )


def training_finished(config: TrainConfig) -> bool:
    """Whether the run folder holds every epoch of a run trained with ``config``'s options
    (its ``config.json`` records their fingerprint, ``metrics.csv`` a row per epoch)."""
    run_dir = Path(config.output)
    recorded, metrics = run_dir / "config.json", run_dir / "metrics.csv"
    if not (recorded.exists() and metrics.exists()):
        return False
    trained_with = json.loads(recorded.read_text()).get("options_sha256")
    return trained_with == options_sha256(config) and len(read_csv(metrics)) >= config.epochs


def run_config(
    plan: StudyPlan, init: str, seed: int, split_file: Path, run_dir: Path
) -> TrainConfig:
    """The training options of one run of the plan; an interrupted run is resumed."""
    pretrained = init in (IMAGENET, SCRATCH)
    resume = (run_dir / "last.pt").exists() and not (run_dir / "result.json").exists()
    this_run = {
        "data": plan.data,
        "output": str(run_dir),
        "epochs": plan.epochs,
        "seed": seed,
        "split_file": str(split_file),
        "weights": init if pretrained else SCRATCH,
        "init_from": None if pretrained else init,
        "val_every": 1,  # the study's curves are made of every epoch's validation
        "resume": resume,
        "overwrite": not resume,
    }
    return TrainConfig(**resolve_options([plan.train_options, this_run]))


def _finished_run(config: TrainConfig, redo_changed: bool) -> dict | None:
    """The recorded result of a finished run made with ``config``'s options, else None.

    A run that finished with other options (an edited plan, recipe or config file) is never
    reused silently: it is refused, or retrained with ``redo_changed``.
    """
    result = Path(config.output) / "result.json"
    if not result.exists():
        return None
    row = json.loads(result.read_text())
    trained_with, asked_for = row.get("options_sha256"), options_sha256(config)
    same = reuse_finished_run(
        result.parent, trained_with, asked_for, redo_changed=redo_changed, asked_by="this study"
    )
    return row if same else None


def _record_run(config: TrainConfig, init: str, fraction: float, train_cases: int) -> dict:
    """The run's row for results.csv and its last epoch's per-case scores, from the files the
    run wrote; ``result.json`` marks it finished."""
    run_dir = Path(config.output)
    epochs = read_csv(run_dir / "metrics.csv")
    if not epochs:
        raise MedgraftError(f"{run_dir}: training wrote no metrics")
    final = epochs[-1]
    final_dice = float(final["val_mean_dice"])
    reached = next(
        int(r["epoch"]) for r in epochs if float(r["val_mean_dice"]) >= REACH_SHARE * final_dice
    )
    cases = [  # every metric the run's validation computed (the per-epoch ones)
        {k: v for k, v in r.items() if k != "epoch"}
        for r in read_csv(run_dir / "val_cases.csv")
        if r["epoch"] == final["epoch"]
    ]
    row = {
        "init": init,
        "fraction": fraction,
        "train_cases": train_cases,
        "seed": config.seed,
        "final_mean_dice": final_dice,
        **{
            k.replace("val_dice_", "final_dice_"): float(v)
            for k, v in final.items()
            if k.startswith("val_dice_")
        },
        "epochs": int(final["epoch"]),
        "epochs_to_90": reached,
        "seconds": sum(float(r["seconds"]) for r in epochs),
        "curve": [float(r["val_mean_dice"]) for r in epochs],
        "cases": cases,
        "options_sha256": options_sha256(config),
    }
    # written last and atomically: its presence marks the run as finished
    atomic_write_text(run_dir / "result.json", json.dumps(row, indent=1))
    return row


def write_results(rows: list[dict], plan: StudyPlan, output: Path) -> None:
    """The study's sources (``plan.json``, ``results.csv`` per run, ``cases.csv`` per run, case
    and class, ``curves.csv`` per epoch), then what is derived from them alone."""
    plan_record = {
        "data": plan.data,
        "epochs": plan.epochs,
        "seeds": plan.seeds,
        "val_fraction": plan.val_fraction,
        "command": plan.command,
        "hardware": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    atomic_write_text(output / "plan.json", json.dumps(plan_record, indent=1) + "\n")
    write_csv(output / "results.csv", rows, [k for k in rows[0] if k not in ("curve", "cases")])
    keys = ("init", "fraction", "seed")
    case_rows = [{**{k: r[k] for k in keys}, **case} for r in rows for case in r["cases"]]
    case_columns = dict.fromkeys(k for r in rows for case in r["cases"] for k in case)
    write_csv(output / "cases.csv", case_rows, [*keys, *case_columns])
    curve_rows = [
        {**{k: r[k] for k in keys}, "epoch": epoch, "val_mean_dice": dice}
        for r in rows
        for epoch, dice in enumerate(r["curve"], start=1)
    ]
    write_csv(output / "curves.csv", curve_rows, [*keys, "epoch", "val_mean_dice"])
    write_summary(output)


def write_summary(folder: Path) -> str:
    """``summary.md`` and the plots of a study folder, from its committed sources only (so
    ``scripts/report.py`` regenerates them); returns the summary."""
    results = StudyResults.read(folder)
    text = summary_markdown(results)
    atomic_write_text(folder / "summary.md", text)
    _plot_dice_vs_fraction(results, folder / "dice_vs_fraction.png")
    for fraction in results.fractions:
        _plot_curves(results, fraction, folder / f"curves_{fraction:g}.png")
    return text


@dataclass
class StudyResults:
    """A study's per-run rows, per-case scores of each run's last epoch, curves and plan."""

    plan: dict
    runs: list[dict]
    cases: list[dict]
    curves: list[dict]

    @classmethod
    def read(cls, folder: Path) -> StudyResults:
        def rows(name: str) -> list[dict]:
            with (folder / name).open() as handle:
                return list(csv.DictReader(handle))

        plan = json.loads((folder / "plan.json").read_text())
        return cls(plan, rows("results.csv"), rows("cases.csv"), rows("curves.csv"))

    @property
    def inits(self) -> list[str]:
        return list(dict.fromkeys(r["init"] for r in self.runs))

    @property
    def fractions(self) -> list[float]:
        return sorted({float(r["fraction"]) for r in self.runs})

    def train_cases(self, fraction: float) -> int:
        return next(int(r["train_cases"]) for r in self.runs if float(r["fraction"]) == fraction)

    def scores(self, init: str, fraction: float) -> np.ndarray | None:
        """Mean foreground Dice per seed (rows) and validation case (columns, sorted by id)."""
        selected = [r for r in self.cases if r["init"] == init and float(r["fraction"]) == fraction]
        if not selected:
            return None
        seeds = sorted({int(r["seed"]) for r in selected})
        case_ids = sorted({r["case"] for r in selected})
        per_class: dict[tuple[int, str], list[float]] = {}
        for r in selected:
            per_class.setdefault((int(r["seed"]), r["case"]), []).append(float(r["dice"]))
        # a class absent from a case's truth scores NaN there: the case's mean is over the rest
        return np.array([[np.nanmean(per_class[(s, c)]) for c in case_ids] for s in seeds])

    def interval(self, init: str, fraction: float) -> Interval | None:
        scores = self.scores(init, fraction)
        return None if scores is None else mean_interval(scores)

    def versus_scratch(
        self, init: str, fraction: float, at: float | None = None
    ) -> Interval | None:
        """``init`` at ``fraction`` minus scratch at ``at`` (default: the same fraction)."""
        mine = self.scores(init, fraction)
        scratch = self.scores(SCRATCH, fraction if at is None else at)
        return None if mine is None or scratch is None else difference_interval(mine, scratch)


def matching_fraction(results: StudyResults, init: str) -> float | None:
    """Smallest label fraction at which ``init`` is not behind scratch trained on all labels
    (the interval of the difference reaches 0 or above); None when it never is, or when there
    is no scratch run at 100% to compare with."""
    for fraction in results.fractions:
        difference = results.versus_scratch(init, fraction, at=1.0)
        if difference is not None and difference.verdict != BEHIND:
            return fraction
    return None


def summary_markdown(results: StudyResults) -> str:
    plan, inits, fractions = results.plan, results.inits, results.fractions
    seeds = len({r["seed"] for r in results.runs})
    validation = len({r["case"] for r in results.cases})
    lines = [
        "# Transfer study",
        "",
        f"Data: `{plan['data']}`; {plan['epochs']} epochs per run; {seeds} seeds per init and "
        f"fraction; validation: the same {validation} cases (a {plan['val_fraction']:g} share) "
        f"for every run. Hardware: {plan['hardware']}, wall time per run below.",
    ]
    if plan["command"]:
        lines += ["", f"Command: `{plan['command']}`"]
    lines += [
        "",
        "Mean foreground Dice of each run's **last epoch** (a fixed budget: the validation cases "
        "choose no checkpoint), mean over seeds and validation cases with its 95% bootstrap "
        f"interval (cases and seeds resampled, {RESAMPLES} draws); per case in "
        "[cases.csv](cases.csv):",
        "",
        "| init | "
        + " | ".join(f"{f:g} ({results.train_cases(f)} cases)" for f in fractions)
        + " |",
        "| --- |" + " --- |" * len(fractions),
    ]
    for init in inits:
        cells = [str(results.interval(init, f) or "-") for f in fractions]
        lines.append(f"| {init} | " + " | ".join(cells) + " |")
    lines += ["", "## Against scratch, at the same label fraction", ""]
    lines += [
        "Difference in mean Dice (init - scratch) with its 95% interval (validation cases "
        "paired, seeds resampled per arm); a claim is made only when the interval excludes 0.",
        "",
        "| init | fraction | difference | verdict |",
        "| --- | --- | --- | --- |",
    ]
    for init in [i for i in inits if i != SCRATCH]:
        for fraction in fractions:
            difference = results.versus_scratch(init, fraction)
            if difference is not None:
                lines.append(f"| {init} | {fraction:g} | {difference} | {difference.verdict} |")
    lines += ["", "## How few labels match scratch on all of them?", ""]
    if results.scores(SCRATCH, 1.0) is None:
        lines.append("No scratch run at fraction 1.0, so there is no reference to match.")
    else:
        for init in [i for i in inits if i != SCRATCH]:
            fraction = matching_fraction(results, init)
            lines.append(
                f"- `{init}` is behind scratch-at-100% at every fraction studied."
                if fraction is None
                else f"- `{init}` is not behind scratch-at-100% from {fraction:g} of the labels "
                f"({results.train_cases(fraction)} cases) on: difference "
                f"{results.versus_scratch(init, fraction, at=1.0)}."
            )
    lines += [
        "",
        "Epochs to reach 90% of the run's last-epoch Dice, and wall time per run (median):",
        "",
        "| init | fraction | epochs to 90% (median) | seconds (median) |",
        "| --- | --- | --- | --- |",
    ]
    for init in inits:
        for fraction in fractions:
            runs = [
                r for r in results.runs if r["init"] == init and float(r["fraction"]) == fraction
            ]
            if runs:
                reach = np.median([int(r["epochs_to_90"]) for r in runs])
                seconds = np.median([float(r["seconds"]) for r in runs])
                lines.append(f"| {init} | {fraction:g} | {reach:g} | {seconds:.0f} |")
    lines += [
        "",
        "Plots: [dice_vs_fraction.png](dice_vs_fraction.png), "
        + ", ".join(f"[curves_{f:g}.png](curves_{f:g}.png)" for f in fractions)
        + "; every run: [results.csv](results.csv), per epoch: [curves.csv](curves.csv).",
    ]
    return "\n".join(lines) + "\n"


def _plot_dice_vs_fraction(results: StudyResults, path: Path) -> None:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    for init in results.inits:
        points = [(f, results.interval(init, f)) for f in results.fractions]
        points = [(f, i) for f, i in points if i is not None]
        fractions = [f for f, _ in points]
        means = np.array([i.mean for _, i in points])
        errors = np.array(
            [[i.mean - i.low for _, i in points], [i.high - i.mean for _, i in points]]
        )
        axis.errorbar(fractions, means, yerr=errors, marker="o", capsize=3, label=init)
    axis.set_xscale("log")
    axis.set_xticks(results.fractions, [f"{t:g}" for t in results.fractions])
    axis.minorticks_off()
    axis.set(
        xlabel="fraction of training labels", ylabel="last-epoch validation mean Dice (95% CI)"
    )
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=120, metadata={"Software": None}))
    plt.close(figure)


def _plot_curves(results: StudyResults, fraction: float, path: Path) -> None:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    for init in results.inits:
        curves: dict[str, list[float]] = {}
        for r in results.curves:
            if r["init"] == init and float(r["fraction"]) == fraction:
                curves.setdefault(r["seed"], []).append(float(r["val_mean_dice"]))
        if not curves:
            continue
        length = min(len(c) for c in curves.values())
        values = np.array([c[:length] for c in curves.values()])
        epochs = np.arange(1, length + 1)
        (line,) = axis.plot(epochs, values.mean(0), marker="o", label=f"{init} (n={len(curves)})")
        if len(curves) > 1:
            axis.fill_between(
                epochs, values.min(0), values.max(0), alpha=0.2, color=line.get_color()
            )
    axis.set(
        title=f"label fraction {fraction:g}",
        xlabel="epoch",
        ylabel="validation mean Dice",
        ylim=(0, 1),
    )
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=120, metadata={"Software": None}))
    plt.close(figure)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
