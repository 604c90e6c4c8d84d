"""The learning-speed page, its plot and its block: medgraft against nnU-Net on CPU time, from
``docs/results/learning_speed*.csv``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medgraft.evaluation.stats import Interval, difference_interval, mean_interval
from medgraft.files import read_csv
from medgraft.lab.measured import note
from medgraft.lab.reports.common import RESULTS, block, dice_by_case, median, render

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


def _per_seed_rows(speed: LearningSpeed) -> list[tuple]:
    """Each seed's mean Dice: the run-to-run spread the case intervals leave out (none when no
    method has two seeds)."""
    if all(len(speed.seeds(m)) < 2 for m in speed.methods):
        return []
    rows = []
    for method in speed.methods:
        for seed in speed.seeds(method):
            cells = []
            for point in speed.point_minutes:
                scores = speed.case_dice(method, point, seed=seed)
                cells.append(f"{scores.mean():.3f}" if scores.size else "-")
            rows.append((METHODS[method], seed, *cells))
    return rows


def learning_speed_readme(root: Path) -> str:
    speed = LearningSpeed.read(root)
    if speed is None:
        return "Not measured with this version."
    return block(
        "learning_speed_block.md.j2",
        dice_table=_dice_table(speed),
        cases=speed.validation_cases,
        seed_summary=_seed_summary(speed),
        claims=_claims(speed),
        measured=note(root, "learning-speed"),
    )


def _pace(snapshot: dict) -> float:
    """CPU seconds per training iteration up to a snapshot (a row of the points table)."""
    return float(snapshot["cpu_minutes"]) * 60 / max(int(snapshot["iterations"]), 1)


def _discarded(speed: LearningSpeed) -> list[dict]:
    """How much slower per CPU-second the discarded runs went than the kept run of the same
    method at the same point (``learning_speed_discarded.csv``)."""
    runs = []
    for row in speed.discarded:
        kept = speed.point(row["method"], int(row["point_min"]), 0)
        if kept is None or row["point_min"] != str(speed.point_minutes[0]):
            continue
        pace = float(row["cpu_seconds"]) / int(row["iterations"])
        runs.append({**row, "name": METHODS[row["method"]], "pace": pace, "kept_pace": _pace(kept)})
    return runs


PACE_SPREAD = 0.10
"""Kept runs of one method whose paces differ by more than this fraction are pointed out."""


def _pace_spreads(speed: LearningSpeed) -> list[str]:
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
    return spreads


def learning_speed_page(root: Path) -> str:
    """``learning_speed.md``: Dice against CPU-minutes with its claims, per class, the runs, the
    calibration, inference times and how to reproduce them."""
    speed = LearningSpeed.read(root)
    assert speed is not None
    return render(
        "learning_speed.md.j2",
        speed=speed,
        points=speed.point_minutes,
        discarded=_discarded(speed),
        spreads=_pace_spreads(speed),
        dice_table=_dice_table(speed),
        measured=note(root, "learning-speed"),
        seed_summary=_seed_summary(speed),
        seeds_for_a_claim=SEEDS_FOR_A_CLAIM,
        claims=_claims(speed),
        per_seed=_per_seed_rows(speed),
        per_class=_per_class_rows(speed),
        runs=_run_rows(speed),
        machines=_seed_machines(speed),
        calibration=_calibration_rows(speed),
        inference=_inference_rows(speed),
    )


def _per_class_rows(speed: LearningSpeed) -> list[tuple]:
    """Per method and class, at each point: mean Dice, mean HD95 where found, the misses."""
    rows = []
    for method in speed.methods:
        for class_name in speed.class_names:
            cells = []
            for point in speed.point_minutes:
                dice = speed.interval(method, point, class_name)
                hd95, misses = speed.hd95(method, point, class_name)
                distance = f"{hd95:.2f} mm" if np.isfinite(hd95) else "-"
                text = f"{dice.mean:.3f}, HD95 {distance} ({misses} missed)" if dice else "-"
                cells.append(text)
            rows.append((METHODS[method], class_name, *cells))
    return rows


def _run_rows(speed: LearningSpeed) -> list[tuple]:
    """Each run's progress at each point."""
    rows = []
    for method in speed.methods:
        for seed in speed.seeds(method):
            for point in speed.point_minutes:
                taken = speed.point(method, point, seed)
                if taken is None:
                    continue
                rows.append(
                    (METHODS[method], seed, point, f"{float(taken['cpu_minutes']):.1f}",
                     taken["iterations"], f"{_pace(taken):.2f}", taken["epoch"],
                     f"{taken['planned_epochs']} x {taken['iterations_per_epoch']}",
                     f"{taken['batch_size']} ({taken['stock_batch_size']})")
                )  # fmt: skip
    return rows


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


def _calibration_rows(speed: LearningSpeed) -> list[dict]:
    """The calibrated pace and planned schedule of each method, and how many of its iterations
    the budget would have held (what an untrained one lacked)."""
    budget = speed.point_minutes[-1] * 60
    return [
        {
            **row,
            "name": METHODS[row["method"]],
            "iterations": budget / float(row["cpu_seconds_per_iteration"]),
        }
        for row in speed.calibration
    ]


def _inference_rows(speed: LearningSpeed) -> list[tuple]:
    """Seconds per case of each method's prediction calls, from the calls that had the cores
    alone where there are any."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in speed.inference:
        groups.setdefault((row["method"], row["tta"]), []).append(row)
    table = []
    for (method, tta), rows in groups.items():
        alone = [r for r in rows if r["shared"] == "no"]
        used = alone or rows
        seconds = median([float(r["seconds_per_case"]) for r in used])
        kind = "alone" if alone else "**all shared the cores**"
        table.append(
            (METHODS[method], tta, f"{seconds:.2f}", f"{len(used)} of {len(rows)}, {kind}")
        )
    return table


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
