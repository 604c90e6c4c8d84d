"""The learning-speed page, its plot and its block: medgraft against nnU-Net on CPU time, from
``docs/results/learning_speed*.csv``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medgraft.evaluation.stats import Interval, difference_interval, mean_interval
from medgraft.files import read_csv
from medgraft.lab.measured import note
from medgraft.lab.reports.common import RESULTS, dice_by_case, median

METHODS = {
    "medgraft-imagenet": "medgraft, ImageNet encoder",
    "medgraft-scratch": "medgraft, from scratch",
    "nnunet-2d": "nnU-Net v2 `2d`",
    "nnunet-3d_fullres": "nnU-Net v2 `3d_fullres`",
}
LEARNING_SPEED = RESULTS / "learning_speed.csv"
SEEDS_FOR_A_CLAIM = 3
"""Seeds (training runs) per method before a difference is called ahead or behind."""


@dataclass
class LearningSpeed:
    """Per-case scores of every snapshot (method, CPU-minute point) and how each was taken."""

    cases: list[dict]
    points: list[dict]
    inference: list[dict]
    calibration: list[dict]
    discarded: list[dict]
    """Snapshots of runs thrown away because something else shared the cores (their pace)."""

    @classmethod
    def read(cls, root: Path) -> LearningSpeed | None:
        if not (root / LEARNING_SPEED).exists():
            return None
        folder = root / RESULTS
        return cls(
            read_csv(root / LEARNING_SPEED),
            read_csv(folder / "learning_speed_points.csv"),
            read_csv(folder / "learning_speed_inference.csv"),  # these three may be absent
            read_csv(folder / "learning_speed_calibration.csv"),
            read_csv(folder / "learning_speed_discarded.csv"),
        )

    @property
    def methods(self) -> list[str]:
        present = {r["method"] for r in self.cases}
        return [m for m in METHODS if m in present]

    @property
    def point_minutes(self) -> list[int]:
        return sorted({int(r["point_min"]) for r in self.cases})

    def seeds(self, method: str) -> list[int]:
        return sorted({int(r["seed"]) for r in self.cases if r["method"] == method})

    def case_dice(
        self, method: str, point: int, class_name: str | None = None, seed: int | None = None
    ) -> np.ndarray:
        """Per validation case (sorted by case): Dice of one class, or the mean of the classes,
        averaged over the method's seeds (or of one ``seed``)."""
        seeds = self.seeds(method) if seed is None else [seed]
        per_seed = []
        for each in seeds:
            rows = [
                r
                for r in self.cases
                if r["method"] == method and int(r["point_min"]) == point and int(r["seed"]) == each
            ]
            by_case = dice_by_case(rows, class_name)
            per_seed.append([by_case[c] for c in sorted(by_case)])
        if not per_seed or not all(len(s) == len(per_seed[0]) for s in per_seed):
            return np.array([])  # a seed not scored at this point: no mean over seeds
        return np.mean(per_seed, axis=0)

    def interval(self, method: str, point: int, class_name: str | None = None) -> Interval | None:
        scores = self.case_dice(method, point, class_name)
        return mean_interval(scores) if scores.size else None

    def difference(self, first: str, second: str, point: int) -> Interval | None:
        a, b = self.case_dice(first, point), self.case_dice(second, point)
        return difference_interval(a, b) if a.size and a.size == b.size else None

    def point(self, method: str, point: int, seed: int = 0) -> dict | None:
        return next(
            (
                p
                for p in self.points
                if p["method"] == method and int(p["point_min"]) == point and int(p["seed"]) == seed
            ),
            None,
        )

    @property
    def class_names(self) -> list[str]:
        return list(dict.fromkeys(r["class"] for r in self.cases))

    @property
    def validation_cases(self) -> int:
        return len({r["case"] for r in self.cases})

    def hd95(self, method: str, point: int, class_name: str) -> tuple[float, int]:
        """Mean HD95 over the cases where the class was found, and the count of misses."""
        values = [
            float(r["hd95"])
            for r in self.cases
            if r["method"] == method and int(r["point_min"]) == point and r["class"] == class_name
        ]
        found = [v for v in values if np.isfinite(v)]
        return (float(np.mean(found)) if found else float("nan")), len(values) - len(found)


def _dice_table(speed: LearningSpeed) -> list[str]:
    points = speed.point_minutes
    lines = [
        "| method | " + " | ".join(f"{p} CPU-min" for p in points) + " |",
        "| --- |" + " --- |" * len(points),
    ]
    for method in speed.methods:
        cells = [str(speed.interval(method, p) or "-") for p in points]
        lines.append(f"| {METHODS[method]} | " + " | ".join(cells) + " |")
    return lines


def _claims(speed: LearningSpeed) -> list[str]:
    """medgraft (ImageNet) against each other method at each point: a verdict from the paired
    interval over cases once both have ``SEEDS_FOR_A_CLAIM`` seeds, the difference alone before."""
    claims = []
    if "medgraft-imagenet" not in speed.methods:
        return claims
    for other in [m for m in speed.methods if m != "medgraft-imagenet"]:
        seeds = min(len(speed.seeds("medgraft-imagenet")), len(speed.seeds(other)))
        for point in speed.point_minutes:
            difference = speed.difference("medgraft-imagenet", other, point)
            if difference is None:
                continue
            verdict = (
                f"**{difference.verdict}**"
                if seeds >= SEEDS_FOR_A_CLAIM
                else f"no verdict yet ({_seeds_text(seeds)}, a claim needs {SEEDS_FOR_A_CLAIM})"
            )
            claims.append(
                f"at {point} CPU-minutes, medgraft (ImageNet) against {METHODS[other]}: "
                f"{verdict}, difference {difference}"
            )
    return claims


def _seeds_text(count: int) -> str:
    return f"{count} seed{'s' if count != 1 else ''}"


def _seed_summary(speed: LearningSpeed) -> str:
    counts = {len(speed.seeds(m)) for m in speed.methods}
    if len(counts) == 1:
        return f"{_seeds_text(counts.pop())} per method"
    return ", ".join(f"{METHODS[m]} {_seeds_text(len(speed.seeds(m)))}" for m in speed.methods)


def _per_point_table(title: str, row: str, points: list[int]) -> list[str]:
    """A section's heading and the header of its table: method, ``row``, one column a point."""
    return [
        f"## {title}",
        "",
        f"| method | {row} | " + " | ".join(f"{p} CPU-min" for p in points) + " |",
        "| --- | --- |" + " --- |" * len(points),
    ]


def _per_seed_table(speed: LearningSpeed) -> list[str]:
    """Each seed's mean Dice: the run-to-run spread the case intervals leave out."""
    if all(len(speed.seeds(m)) < 2 for m in speed.methods):
        return []
    points = speed.point_minutes
    lines = _per_point_table("Per seed", "seed", points)
    for method in speed.methods:
        for seed in speed.seeds(method):
            cells = []
            for point in points:
                scores = speed.case_dice(method, point, seed=seed)
                cells.append(f"{scores.mean():.3f}" if scores.size else "-")
            lines.append(f"| {METHODS[method]} | {seed} | " + " | ".join(cells) + " |")
    return [*lines, "", "Mean over cases of the classes' mean Dice, one training run each.", ""]


def learning_speed_readme(root: Path) -> str:
    speed = LearningSpeed.read(root)
    if speed is None:
        return "Not measured with this version."
    return "\n".join(
        [
            *_dice_table(speed),
            "",
            f"Mean foreground Dice on the {speed.validation_cases} validation cases of "
            "hippocampus fold 0 [95% bootstrap interval over cases of the mean over seeds], "
            f"{_seed_summary(speed)}, each run on one thread; the clock is the training "
            "process's CPU time ([details, per class and seed, HD95, inference "
            "times](docs/results/learning_speed.md)). From the interval of the paired difference "
            "over cases:",
            "",
            *[f"- {claim}." for claim in _claims(speed)],
            "",
            f"The runs and their scores: {note(root, 'learning-speed')}.",
        ]
    )


def _pace(snapshot: dict) -> float:
    """CPU seconds per training iteration up to a snapshot (a row of the points table)."""
    return float(snapshot["cpu_minutes"]) * 60 / max(int(snapshot["iterations"]), 1)


def _discarded_text(speed: LearningSpeed) -> str:
    """How much slower per CPU-second the discarded runs went than the kept run of the same
    method at the same point (``learning_speed_discarded.csv``)."""
    sentences = []
    for row in speed.discarded:
        kept = speed.point(row["method"], int(row["point_min"]), 0)
        if kept is None or row["point_min"] != str(speed.point_minutes[0]):
            continue
        pace = float(row["cpu_seconds"]) / int(row["iterations"])
        kept_pace = _pace(kept)
        sentences.append(
            f" A run of {METHODS[row['method']]}, seed {row['seed']}, {row['why']}, took "
            f"{pace:.2f} CPU seconds per iteration over its first {row['point_min']} "
            f"CPU-minutes against seed 0's {kept_pace:.2f} ({1 - kept_pace / pace:.0%} fewer "
            f"iterations per CPU-minute) and was discarded."
        )
    return "".join(sentences)


PACE_SPREAD = 0.10
"""Kept runs of one method whose paces differ by more than this fraction are pointed out."""


def _pace_text(speed: LearningSpeed) -> str:
    """How far apart the kept runs of one method went per CPU-second over the first point: on
    this virtual machine the pace varies between sessions, not only with other jobs."""
    first = speed.point_minutes[0]
    spreads = []
    for method in speed.methods:
        paces = {
            seed: _pace(p)
            for seed in speed.seeds(method)
            if (p := speed.point(method, first, seed))
        }
        if len(paces) > 1 and max(paces.values()) > (1 + PACE_SPREAD) * min(paces.values()):
            listed = ", ".join(f"seed {seed} {pace:.2f}" for seed, pace in paces.items())
            spreads.append(f"{METHODS[method]}: {listed}")
    if not spreads:
        return ""
    return (
        f" The kept runs of one method went at different paces too over their first {first} "
        f"CPU-minutes (CPU seconds per iteration; {'; '.join(spreads)}): the machine's speed "
        "per CPU-second varies between sessions even with nothing else on the cores (a shared "
        "virtual machine that reports no steal time), so a point is a CPU-time budget on the "
        "machine as it was, and the iterations it bought are in the table of runs."
    )


def learning_speed_page(root: Path) -> str:
    """``learning_speed.md``: Dice against CPU-minutes with its claims, per class, the runs, the
    calibration, inference times and how to reproduce them."""
    speed = LearningSpeed.read(root)
    assert speed is not None
    lines = [
        *_learning_speed_intro(speed, note(root, "learning-speed")),
        *_learning_speed_per_class(speed),
        *_learning_speed_runs(speed),
        *(_learning_speed_calibration(speed) if speed.calibration else []),
        *(_learning_speed_inference(speed) if speed.inference else []),
        *LEARNING_SPEED_REPRODUCE,
    ]
    return "\n".join(lines) + "\n"


def _learning_speed_intro(speed: LearningSpeed, measured_at: str) -> list[str]:
    """What is compared and how it is clocked, the mean foreground Dice with when its runs were
    measured (``measured_at``), its claims, the figure and the per-seed table."""
    return [
        "# Learning speed: medgraft against nnU-Net on CPU time",
        "",
        "<!-- generated by scripts/report.py from learning_speed.csv, learning_speed_points.csv, "
        "learning_speed_inference.csv and learning_speed_discarded.csv; do not edit -->",
        "",
        f"Hippocampus (MSD, shared copy), fold 0 of the 5-fold split of `accuracy_cv.py`: each "
        f"method trains on the fold's training cases and is scored on its "
        f"{speed.validation_cases} validation cases, which no run saw and which chose nothing "
        "(each point's model is the snapshot taken when the run's clock passed it). Scores come "
        "from `medgraft evaluate`'s metrics (MONAI Dice, HD95) at the images' own resolution for "
        "both tools.",
        "",
        "**The clock** is the training process's CPU time (user + system, `time.process_time`) "
        "from the first training iteration: data loading, augmentation, forward, backward, "
        "optimiser and checkpoints count; setup (loading volumes, nnU-Net's planning and "
        "preprocessing) and validation during training do not. Every run uses one thread and no "
        "loader workers, so the unit does not depend on the wall clock; it does depend on what "
        "else shares the cores."
        + _discarded_text(speed)
        + _pace_text(speed)
        + " The runs of a seed go in pairs on the 2 cores with nothing else, and the table of "
        "runs below shows each run's pace. With both of this machine's 2 cores, a run would "
        "reach a point in about half its CPU-minutes of wall time at best.",
        "",
        "## Mean foreground Dice",
        "",
        *_dice_table(speed),
        "",
        f"The runs and their scores: {measured_at}.",
        "",
        "Mean over cases of the classes' mean Dice, each case's Dice averaged over the "
        f"method's seeds ({_seed_summary(speed)}) [95% percentile bootstrap over cases]. Paired "
        "differences (same cases); a difference is called ahead or behind only with "
        f"{SEEDS_FOR_A_CLAIM} seeds of both methods, since one run per method leaves the "
        "run-to-run variation out of the interval:",
        "",
        *[f"- {claim}." for claim in _claims(speed)],
        "",
        "![Dice against CPU-minutes](learning_speed.png)",
        "",
        *_per_seed_table(speed),
    ]


def _learning_speed_per_class(speed: LearningSpeed) -> list[str]:
    points = speed.point_minutes
    lines = _per_point_table("Per class", "class", points)
    for method in speed.methods:
        for class_name in speed.class_names:
            cells = []
            for point in points:
                dice = speed.interval(method, point, class_name)
                hd95, misses = speed.hd95(method, point, class_name)
                distance = f"{hd95:.2f} mm" if np.isfinite(hd95) else "-"
                text = f"{dice.mean:.3f}, HD95 {distance} ({misses} missed)" if dice else "-"
                cells.append(text)
            lines.append(f"| {METHODS[method]} | {class_name} | " + " | ".join(cells) + " |")
    return [
        *lines,
        "",
        "Dice mean over cases; HD95 mean over the cases where the class was found, with the "
        "count of cases where it was not.",
    ]


def _learning_speed_runs(speed: LearningSpeed) -> list[str]:
    """Each run's progress at each point, the machines that ran the seeds, and what differs
    from each tool's defaults."""
    points = speed.point_minutes
    lines = [
        "",
        "## The runs",
        "",
        "| method | seed | point | CPU minutes | iterations | CPU seconds per iteration "
        "| epoch | planned epochs x iterations | batch (stock) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method in speed.methods:
        for seed in speed.seeds(method):
            for point in points:
                taken = speed.point(method, point, seed)
                if taken is None:
                    continue
                lines.append(
                    f"| {METHODS[method]} | {seed} | {point} | "
                    f"{float(taken['cpu_minutes']):.1f} | {taken['iterations']} | "
                    f"{_pace(taken):.2f} | "
                    f"{taken['epoch']} | {taken['planned_epochs']} x "
                    f"{taken['iterations_per_epoch']} | {taken['batch_size']} "
                    f"({taken['stock_batch_size']}) |"
                )
    return [
        *lines,
        "",
        *_seed_machines(speed),
        "",
        "The runs of a seed shared the 2 cores (one thread each), which the CPU clock does not "
        "count. Each run's learning-rate schedule (poly for both tools) was sized by a short "
        "calibration to end at the last point, and later seeds train the same plans; the "
        "earlier points are snapshots of the same run, not runs planned for the shorter "
        "budgets.",
        "",
        "What differs from each tool's defaults: medgraft runs the shipped `mri-2.5d` recipe's "
        "axial model alone (`--views axial`: one model learning, as nnU-Net's `2d` trains one; "
        "the recipe's three views take three times the CPU per point) with its epochs set to "
        "fill the budget (and `--weights none` from scratch); nnU-Net v2 runs "
        "its stock `2d` plan and trainer with the batch size in `nnUNetPlans.json` set as above, "
        "epochs and iterations set to fill the budget, one validation iteration per epoch, no "
        "final validation (`scripts/nnunet_budget.py`), planned and preprocessed from the fold's "
        "training cases only. medgraft's predictions keep the recipe's largest-component "
        "clean-up; nnU-Net's are its raw predictions (its post-processing is chosen by a "
        "cross-validation this budget has no room for).",
    ]


def _seed_machines(speed: LearningSpeed) -> list[str]:
    """A line per seed and machine that scored its runs (a seed's runs may be redone later)."""
    machines: dict[tuple[str, ...], set[str]] = {}
    for p in speed.points:
        key = (p["seed"], p["date"], p["commit"], p["cpu"], p["cores"], p["python"], p["torch"],
               p["medgraft"])  # fmt: skip
        machines.setdefault(key, set()).add(p["method"])
    return [
        f"Seed {seed} ({'; '.join(METHODS[m] for m in METHODS if m in methods)}): {cpu}, "
        f"{cores} cores, Python {python}, torch {torch}, medgraft {version} (commit "
        f"{commit}), scored {date}."
        for (seed, date, commit, cpu, cores, python, torch, version), methods in sorted(
            machines.items(), key=lambda item: (int(item[0][0]), item[0][1:])
        )
    ]


def _learning_speed_calibration(speed: LearningSpeed) -> list[str]:
    """The calibrated pace and planned schedule of each method, and what an untrained one's
    budget would have held."""
    points = speed.point_minutes
    budget = points[-1] * 60
    lines = [
        "",
        "## Calibration",
        "",
        "| method | CPU seconds per iteration | iterations timed | planned epochs x "
        "iterations | batch (stock) | trained |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in speed.calibration:
        lines.append(
            f"| {METHODS[row['method']]} | {row['cpu_seconds_per_iteration']} | "
            f"{row['calibration_iterations']} | {row['planned_epochs']} x "
            f"{row['iterations_per_epoch']} | {row['batch_size']} ({row['stock_batch_size']}) "
            f"| {row['trained']} |"
        )
    lines += [
        "",
        "One thread, timed on the CPU clock before the runs (the other calibrations and runs "
        "may have shared the cores). The planned epochs make each schedule end at "
        f"{points[-1]} CPU-minutes at the calibrated speed; the runs' actual progress is in "
        "the table above.",
    ]
    for row in speed.calibration:
        if row["trained"] == "no":
            iterations = budget / float(row["cpu_seconds_per_iteration"])
            lines.append("")
            lines.append(
                f"{METHODS[row['method']]} was not trained: {points[-1]} CPU-minutes hold "
                f"about {iterations:.0f} of its iterations (nnU-Net's stock schedule is "
                "1000 epochs x 250)."
            )
    return lines


def _learning_speed_inference(speed: LearningSpeed) -> list[str]:
    """Seconds per case of each method's prediction calls, from the calls that had the cores
    alone where there are any."""
    lines = [
        "",
        "## Inference",
        "",
        "| method | TTA | seconds per case (median) | calls used, of all |",
        "| --- | --- | --- | --- |",
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in speed.inference:
        groups.setdefault((row["method"], row["tta"]), []).append(row)
    for (method, tta), rows in groups.items():
        alone = [r for r in rows if r["shared"] == "no"]
        used = alone or rows
        seconds = median([float(r["seconds_per_case"]) for r in used])
        kind = "alone" if alone else "**all shared the cores**"
        lines.append(
            f"| {METHODS[method]} | {tta} | {seconds:.2f} | {len(used)} of {len(rows)}, {kind} |"
        )
    lines += [
        "",
        "Wall seconds per validation case of each prediction call (every snapshot is one "
        "call; nnU-Net with its mirroring TTA once, at the last point), both cores, "
        "including start-up. The median uses the calls that had the cores alone (other "
        "jobs below a quarter of a core), or all calls, marked, when none did.",
    ]
    return lines


LEARNING_SPEED_REPRODUCE = [
    "",
    "## Reproduce",
    "",
    "```bash",
    "python3 -m venv .venv-nnunet && .venv-nnunet/bin/pip install torch nnunetv2",
    "python scripts/learning_speed.py prepare",
    "python scripts/learning_speed.py calibrate",
    "for s in 0 1 2; do   # seeds: a session each on 2 cores",
    "  for m in medgraft-imagenet medgraft-scratch nnunet-2d; do",
    "    python scripts/learning_speed.py train --method $m --seed $s &   # resumable",
    "  done; wait",
    "  python scripts/learning_speed.py score --seed $s   # replaces its runs' rows",
    "done",
    "python scripts/report.py",
    "```",
]


def learning_speed_plot(root: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speed = LearningSpeed.read(root)
    if speed is None:
        return
    figure, axis = plt.subplots(figsize=(6, 4))
    for method in speed.methods:
        xs, means, errors = [], [], []
        for point in speed.point_minutes:
            interval, taken = speed.interval(method, point), speed.point(method, point)
            if interval is None or taken is None:
                continue
            xs.append(float(taken["cpu_minutes"]))
            means.append(interval.mean)
            errors.append([interval.mean - interval.low, interval.high - interval.mean])
        axis.errorbar(
            xs, means, yerr=np.array(errors).T, marker="o", capsize=3,
            label=METHODS[method].replace("`", ""),
        )  # fmt: skip
    axis.set_xlabel("training CPU-minutes (one thread)")
    axis.set_ylabel("mean foreground Dice, fold 0 validation")
    axis.set_xticks(speed.point_minutes)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(root / RESULTS / "learning_speed.png", dpi=120)
    plt.close(figure)
