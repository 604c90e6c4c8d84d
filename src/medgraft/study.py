"""The transfer study: does ImageNet (or an earlier run) beat scratch, and with how few labels?

Every init x label fraction x seed is an ordinary training run
(:func:`medgraft.training.trainer.train`, no second loop) on a split fixed for the whole study:
one validation set, and a training pool in a fixed random order of which fraction ``f`` takes
the first cases, so 10% ⊂ 25% ⊂ … ⊂ 100%.
Resumable: a run that finished left a ``result.json`` and is skipped; one that was interrupted
continues from its ``last.pt``.
"""

from __future__ import annotations

import csv
import json
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medgraft.config.loading import (
    load_config_file,
    options_sha256,
    overlay_options,
    resolve_options,
)
from medgraft.config.schema import (
    QUICK_STUDY,
    QUICK_STUDY_TRAINING,
    DemoOptions,
    StudyOptions,
    TrainConfig,
)
from medgraft.data.discovery import discover_dataset
from medgraft.data.splits import split_cases
from medgraft.errors import MedgraftError
from medgraft.files import atomic_write, atomic_write_text
from medgraft.training.trainer import train

SCRATCH = "none"
IMAGENET = "imagenet"
REACH_SHARE = 0.9
"""``epochs_to_90``: the first epoch whose validation Dice reaches this share of the best."""


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
            raise MedgraftError(
                f"--fractions must be numbers, not '{options.fractions}'"
            ) from exc
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
    given: dict,
    *,
    quick: bool = False,
    config_file: Path | None = None,
    command: str = "",
) -> StudyPlan:
    """The plan ``medgraft study`` runs: the schema's defaults < ``--quick``'s < typed flags;
    training options: the study's encoder/offline/device < ``--config`` < those flags typed."""
    if data is None and not quick:
        raise MedgraftError("--data is required (or use --quick for the embedded demo data)")
    layers = [QUICK_STUDY, given] if quick else [given]
    options = StudyOptions(**resolve_options(layers, config_class=StudyOptions))
    shared = {k: getattr(options, k) for k in ("encoder", "offline", "device")}
    train_options = overlay_options(
        [
            shared,
            QUICK_STUDY_TRAINING if quick else {},
            load_config_file(config_file) if config_file else {},
            {k: v for k, v in given.items() if k in shared},
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


def study_split(records: list[dict], plan: StudyPlan) -> dict[str, list[str]]:
    """Validation cases and the ordered training pool, stored in ``split.json`` and reused."""
    path = Path(plan.output) / "split.json"
    ids = sorted(r["case_id"] for r in records)
    if path.exists():
        stored = json.loads(path.read_text())
        if sorted(stored["val"] + stored["pool"]) != ids:
            raise MedgraftError(
                f"{path}: this study was started on other cases; use a new --output"
            )
        return stored
    train_records, val_records = split_cases(records, plan.val_fraction, plan.split_seed)
    pool = [r["case_id"] for r in train_records]
    np.random.default_rng(plan.split_seed).shuffle(pool)
    split = {"val": [r["case_id"] for r in val_records], "pool": pool}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(split, indent=1))
    return split


def fraction_cases(pool: list[str], fraction: float) -> list[str]:
    """The first share of the pool: nested across fractions by construction."""
    return pool[: max(1, round(fraction * len(pool)))]


def run_study(
    plan: StudyPlan, trainer: Callable[[TrainConfig], object] | None = None
) -> list[dict]:
    """Train every missing combination (with ``trainer``, default :func:`train`), then write
    results, summary and plots."""
    plan.check()
    trainer = trainer or train
    output = Path(plan.output)
    spec = discover_dataset(plan.data)
    split = study_split(spec.training, plan)
    rows = []
    for fraction in plan.fractions:
        cases = fraction_cases(split["pool"], fraction)
        split_file = output / "splits" / f"fraction-{fraction:g}.json"
        split_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(split_file, json.dumps({"train": cases, "val": split["val"]}, indent=1))
        for init in plan.inits:
            for seed in range(plan.seeds):
                run_dir = output / "runs" / f"{init_label(init)}-f{fraction:g}-s{seed}"
                config = run_config(plan, init, seed, split_file, run_dir)
                row = _finished_run(config, plan.redo_changed)
                if row is None:
                    trainer(config)
                    row = _record_run(config, init_label(init), fraction, len(cases))
                rows.append(row)
    write_results(rows, plan, output)
    return rows


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
    if row.get("options_sha256") == options_sha256(config):
        return row
    if redo_changed:
        return None
    raise MedgraftError(
        f"{result.parent}: finished with other training options than this study asks for now "
        "(the plan, recipe or config file changed); pass --redo-changed to retrain it, or use "
        "another --output"
    )


def _record_run(config: TrainConfig, init: str, fraction: float, train_cases: int) -> dict:
    """The run's row for results.csv, from its metrics; ``result.json`` marks it finished."""
    run_dir = Path(config.output)
    epochs = list(csv.DictReader((run_dir / "metrics.csv").open()))
    if not epochs:
        raise MedgraftError(f"{run_dir}: training wrote no metrics")
    best = max(epochs, key=lambda r: float(r["val_mean_dice"]))
    best_dice = float(best["val_mean_dice"])
    reached = next(
        int(r["epoch"]) for r in epochs if float(r["val_mean_dice"]) >= REACH_SHARE * best_dice
    )
    row = {
        "init": init,
        "fraction": fraction,
        "train_cases": train_cases,
        "seed": config.seed,
        "best_mean_dice": best_dice,
        **{
            k.replace("val_dice_", "best_dice_"): float(v)
            for k, v in best.items()
            if k.startswith("val_dice_")
        },
        "best_epoch": int(best["epoch"]),
        "epochs_to_90": reached,
        "seconds": sum(float(r["seconds"]) for r in epochs),
        "curve": [float(r["val_mean_dice"]) for r in epochs],
        "options_sha256": options_sha256(config),
    }
    # written last and atomically: its presence marks the run as finished
    atomic_write_text(run_dir / "result.json", json.dumps(row, indent=1))
    return row


def write_results(rows: list[dict], plan: StudyPlan, output: Path) -> None:
    """``results.csv``, ``curves.csv``, ``summary.md``, ``dice_vs_fraction.png``,
    ``curves_<fraction>.png``."""
    columns = [k for k in rows[0] if k != "curve"]

    def write_runs(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def write_curves(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["init", "fraction", "seed", "epoch", "val_mean_dice"])
            for row in rows:
                for epoch, dice in enumerate(row["curve"], start=1):
                    writer.writerow([row["init"], row["fraction"], row["seed"], epoch, dice])

    atomic_write(output / "results.csv", write_runs)
    atomic_write(output / "curves.csv", write_curves)
    atomic_write_text(output / "summary.md", summary_markdown(rows, plan))
    _plot_dice_vs_fraction(rows, output / "dice_vs_fraction.png")
    for fraction in sorted({r["fraction"] for r in rows}):
        _plot_curves(rows, fraction, output / f"curves_{fraction:g}.png")


def aggregate(rows: list[dict]) -> dict[tuple[str, float], tuple[float, float, int]]:
    """(init, fraction) → (mean, sample std, runs) of the best validation mean Dice."""
    groups: dict[tuple[str, float], list[float]] = {}
    for row in rows:
        groups.setdefault((row["init"], row["fraction"]), []).append(row["best_mean_dice"])
    return {
        key: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v))
        for key, v in groups.items()
    }


def matching_fraction(rows: list[dict], init: str) -> float | None:
    """Smallest label fraction at which ``init`` reaches scratch's mean Dice at 100%.

    None when it never does, or when there is no scratch run at 100% to compare with."""
    stats = aggregate(rows)
    target = stats.get((SCRATCH, 1.0))
    if target is None:
        return None
    reached = [f for (i, f), (mean, _, _) in stats.items() if i == init and mean >= target[0]]
    return min(reached) if reached else None


def summary_markdown(rows: list[dict], plan: StudyPlan) -> str:
    stats = aggregate(rows)
    inits = list(dict.fromkeys(r["init"] for r in rows))
    fractions = sorted({r["fraction"] for r in rows})
    cases = {r["fraction"]: r["train_cases"] for r in rows}
    lines = [
        "# Transfer study",
        "",
        f"Data: `{plan.data}`; {plan.epochs} epochs per run; seeds: {plan.seeds}; "
        f"validation: the same {plan.val_fraction:g} share of cases for every run. "
        f"Hardware: {platform.machine()}, measured wall time per run below.",
    ]
    if plan.command:
        lines += ["", f"Command: `{plan.command}`"]
    lines += [
        "",
        "Best validation mean foreground Dice, mean ± std over seeds:",
        "",
        "| init | " + " | ".join(f"{f:g} ({cases[f]} cases)" for f in fractions) + " |",
        "| --- |" + " --- |" * len(fractions),
    ]
    for init in inits:
        cells = []
        for fraction in fractions:
            if (init, fraction) in stats:
                mean, std, n = stats[(init, fraction)]
                cells.append(f"{mean:.3f} ± {std:.3f}" if n > 1 else f"{mean:.3f}")
            else:
                cells.append("-")
        lines.append(f"| {init} | " + " | ".join(cells) + " |")
    lines += ["", "Epochs to reach 90% of the run's own best, and wall time per run (mean):", ""]
    lines += ["| init | fraction | epochs to 90% | seconds |", "| --- | --- | --- | --- |"]
    for init in inits:
        for fraction in fractions:
            runs = [r for r in rows if r["init"] == init and r["fraction"] == fraction]
            if runs:
                reach = np.mean([r["epochs_to_90"] for r in runs])
                seconds = np.mean([r["seconds"] for r in runs])
                lines.append(f"| {init} | {fraction:g} | {reach:.1f} | {seconds:.0f} |")
    lines += ["", "## Does pretraining pay off?", ""]
    scratch_full = stats.get((SCRATCH, 1.0))
    if scratch_full is None:
        lines.append("No scratch run at fraction 1.0, so there is no reference to match.")
    for init in inits:
        if init == SCRATCH or scratch_full is None:
            continue
        fraction = matching_fraction(rows, init)
        if fraction is None:
            lines.append(
                f"- `{init}` does not reach scratch at 100% labels ({scratch_full[0]:.3f}) "
                "at any fraction studied."
            )
        else:
            lines.append(
                f"- `{init}` matches scratch at 100% labels ({scratch_full[0]:.3f}) with "
                f"{fraction:g} of the labels ({cases[fraction]} cases): "
                f"{stats[(init, fraction)][0]:.3f}."
            )
    lines += [
        "",
        "Plots: [dice_vs_fraction.png](dice_vs_fraction.png), "
        + ", ".join(f"[curves_{f:g}.png](curves_{f:g}.png)" for f in fractions)
        + "; every run: [results.csv](results.csv), per epoch: [curves.csv](curves.csv).",
    ]
    return "\n".join(lines) + "\n"


def _plot_dice_vs_fraction(rows: list[dict], path: Path) -> None:
    plt = _pyplot()
    stats = aggregate(rows)
    figure, axis = plt.subplots(figsize=(6, 4))
    for init in dict.fromkeys(r["init"] for r in rows):
        points = sorted((f, m, s) for (i, f), (m, s, _) in stats.items() if i == init)
        fractions, means, stds = zip(*points, strict=True)
        axis.errorbar(fractions, means, yerr=stds, marker="o", capsize=3, label=init)
    axis.set_xscale("log")
    ticks = sorted({r["fraction"] for r in rows})
    axis.set_xticks(ticks, [f"{t:g}" for t in ticks])
    axis.minorticks_off()
    axis.set(xlabel="fraction of training labels", ylabel="best validation mean Dice")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=120))
    plt.close(figure)


def _plot_curves(rows: list[dict], fraction: float, path: Path) -> None:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    for init in dict.fromkeys(r["init"] for r in rows):
        curves = [r["curve"] for r in rows if r["init"] == init and r["fraction"] == fraction]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        values = np.array([c[:length] for c in curves])
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
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=120))
    plt.close(figure)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
