"""The accuracy page (``docs/results/accuracy.md``: the CV per dataset, the ablations, where
the errors lie) and the accuracy block, from ``docs/results/accuracy/*.csv``."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medgraft.config.recipes import load_recipe
from medgraft.evaluation.metrics import METRICS
from medgraft.evaluation.stats import RESAMPLES, Interval, difference_interval, mean_interval
from medgraft.files import read_csv
from medgraft.lab.measured import note
from medgraft.lab.reports.common import (
    DATASETS,
    RESULTS,
    block,
    measured_sentence,
    median,
    paired_dice,
    render,
    wall_text,
)


@dataclass
class ClassResult:
    """One class of one dataset over every validation case of every fold."""

    name: str
    dice: np.ndarray
    hd95: np.ndarray
    nsd: np.ndarray

    @property
    def interval(self) -> Interval:
        return mean_interval(self.dice)

    @property
    def missed(self) -> int:
        """Cases whose truth holds the class and whose prediction has none of it."""
        return int(np.isinf(self.hd95).sum())


class Accuracy:
    """The per-case scores of ``accuracy/cases.csv`` for one dataset and predict variant."""

    def __init__(self, cases: list[dict], folds: list[dict], dataset: str, variant: str) -> None:
        self.rows = [r for r in cases if r["dataset"] == dataset and r["variant"] == variant]
        self.folds = [r for r in folds if r["dataset"] == dataset]
        self.dataset = DATASETS[dataset]
        self.classes = list(dict.fromkeys(r["class"] for r in self.rows))

    def __bool__(self) -> bool:
        return bool(self.rows)

    def of_class(self, name: str, fold: str | None = None) -> ClassResult:
        rows = [r for r in self.rows if r["class"] == name and (fold is None or r["fold"] == fold)]
        rows = [r for r in rows if r["dice"] != "nan"]  # the class is absent from the truth
        values = {m: np.array([float(r[m]) for r in rows]) for m in METRICS}
        return ClassResult(name, **values)

    def foreground(self) -> Interval:
        """Mean foreground Dice: per case, the mean over its classes; interval over cases."""
        per_case: dict[tuple[str, str], list[float]] = {}
        for r in self.rows:
            if r["dice"] != "nan":
                per_case.setdefault((r["fold"], r["case"]), []).append(float(r["dice"]))
        return mean_interval(np.array([np.mean(v) for v in per_case.values()]))

    @property
    def case_count(self) -> int:
        return len({(r["fold"], r["case"]) for r in self.rows})

    @property
    def fold_ids(self) -> list[str]:
        return sorted({r["fold"] for r in self.rows}, key=int)

    def median_fold_minutes(self) -> float:
        return median([float(f["seconds"]) for f in self.folds]) / 60

    def shared_folds(self) -> int:
        return sum(f["shared"] == "yes" for f in self.folds)

    def goal_text(self) -> str:
        goal, reached = self.dataset.goal, self.foreground().mean
        if goal is None:
            return "report only"
        verdict = "met" if reached >= goal else f"missed by {goal - reached:.3f}"
        return f"{goal:.2f}: {verdict}"


def _hd95_text(result: ClassResult, unit: str, with_misses: bool = True) -> str:
    finite = result.hd95[np.isfinite(result.hd95)]
    text = f"{finite.mean():.2f} {unit}"
    return f"{text} ({result.missed} missed)" if with_misses else text


def accuracy_readme(root: Path) -> str:
    cases, folds = accuracy_sources(root)
    lines = [
        "| recipe | data | folds, cases | Dice per class: mean [95% CI] over cases | mean "
        "foreground Dice | goal | wall time per fold (median) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, dataset in DATASETS.items():
        result = Accuracy(cases, folds, name, "recipe")
        if not result:
            continue
        per_class = ", ".join(f"{c} {result.of_class(c).interval}" for c in result.classes)
        lines.append(
            f"| `{dataset.recipe}` | {dataset.title} | {len(result.fold_ids)}, "
            f"{result.case_count} | {per_class} | {result.foreground().mean:.3f} "
            f"| {result.goal_text()} | {result.median_fold_minutes():.1f} min |"
        )
    return block(
        "accuracy_block.md.j2",
        table=lines,
        measured=measured_sentence(root, "accuracy"),
        missing=[f"`{d.recipe}` ({d.title})" for n, d in DATASETS.items() if not _has(cases, n)],
    )


def _has(cases: list[dict], dataset: str) -> bool:
    return any(r["dataset"] == dataset for r in cases)


def accuracy_sources(root: Path) -> tuple[list[dict], list[dict]]:
    folder = root / RESULTS / "accuracy"
    return read_csv(folder / "cases.csv"), read_csv(folder / "folds.csv")


def accuracy_page(root: Path) -> str:
    """``accuracy.md``: how the CV was measured, each dataset's scores, the ablations, where the
    errors lie and the published figures."""
    cases, folds = accuracy_sources(root)
    datasets = []
    for name, dataset in DATASETS.items():
        result = Accuracy(cases, folds, name, "recipe")
        section = _dataset_section(result, Accuracy(cases, folds, name, "raw")) if result else None
        datasets.append((dataset, section, f"{result.foreground()}" if result else "not measured"))
    return render(
        "accuracy.md.j2",
        machines=sorted({f"{f['cpu']}, {f['cores']} cores, GPU {f['gpu']}" for f in folds}),
        versions=sorted({f"torch {f['torch']}, Python {f['python']}" for f in folds}),
        resamples=RESAMPLES,
        measured=note(root, "accuracy"),
        datasets=datasets,
        ablations=ablation_section(root, cases, folds),
        error_bands=error_bands_section(root),
    )


def _arms_wall_text(arms: list[list[dict]]) -> str:
    """Each arm's median wall time; each names its processor when the arms ran on different
    ones, whose times do not compare."""
    texts = [wall_text(arm) for arm in arms]
    processors = [sorted({f["cpu"] for f in arm}) for arm in arms]
    if len({cpu for names in processors for cpu in names}) > 1:
        texts = [
            f"{text} on {' and '.join(names)}"
            for text, names in zip(texts, processors, strict=True)
        ]
    return ", ".join(texts)


def _paired_rows(
    head: list[str], rows: list[dict], recipe_rows: list[dict], wall: str
) -> list[str]:
    """Table rows, one per class and the class mean: the recipe's and the changed arm's mean
    Dice over the cases both scored, and the paired difference's interval and verdict."""
    lines = []
    class_names = [*dict.fromkeys(r["class"] for r in rows), None]
    for index, class_name in enumerate(class_names):
        first, second = paired_dice(rows, recipe_rows, class_name)
        difference = difference_interval(first, second)
        cells = [
            *([*head[:2], f"{head[2]}; {len(first)}"] if index == 0 else ["", "", ""]),
            class_name or "mean foreground",
            f"{second.mean():.3f}",
            f"{first.mean():.3f}",
            str(difference),
            difference.verdict,
            wall if index == 0 else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def ablation_section(root: Path, cases: list[dict], folds: list[dict]) -> dict | None:
    """One row per change and class: the recipe and the change on the same folds and cases,
    with the paired difference's interval (``accuracy/ablations.csv``). The recipe's clean-up
    is an ablation too: its CV models scored without it (variant ``raw``), class by class, as
    nnU-Net chooses its post-processing."""
    path = root / RESULTS / "accuracy" / "ablations.csv"
    changed = read_csv(path)
    changed_folds = read_csv(path.with_name("ablation_folds.csv"))
    cleaned = [name for name in DATASETS if Accuracy(cases, folds, name, "raw")]
    if not (changed or cleaned):
        return None
    lines = []
    for ablation in dict.fromkeys(r["ablation"] for r in changed):
        rows = [r for r in changed if r["ablation"] == ablation]
        name, fold_ids = rows[0]["dataset"], sorted({r["fold"] for r in rows})
        change, baseline = rows[0]["change"], rows[0].get("baseline", "")
        if baseline:  # measured against an earlier recipe: that ablation's runs
            recipe_rows = [
                r for r in changed if r["ablation"] == baseline and r["fold"] in fold_ids
            ]
            recipe_folds = [
                f for f in changed_folds if f["ablation"] == baseline and f["fold"] in fold_ids
            ]
            if not recipe_rows:
                sys.exit(
                    f"{path}: {ablation} is paired with {baseline}, which has no rows for "
                    f"folds {', '.join(fold_ids)}; run accuracy_cv.py ablate --ablation {baseline}"
                )
            change += f"; against: {recipe_rows[0]['change']}"
        else:
            recipe_rows = [
                r
                for r in cases
                if r["dataset"] == name and r["variant"] == "recipe" and r["fold"] in fold_ids
            ]
            recipe_folds = [f for f in folds if f["dataset"] == name and f["fold"] in fold_ids]
        wall = _arms_wall_text(
            [recipe_folds, [f for f in changed_folds if f["ablation"] == ablation]]
        )
        head = [change, DATASETS[name].title, ", ".join(fold_ids)]
        lines += _paired_rows(head, rows, recipe_rows, wall)
    for name in cleaned:
        raw = [r for r in cases if r["dataset"] == name and r["variant"] == "raw"]
        recipe_rows = [r for r in cases if r["dataset"] == name and r["variant"] == "recipe"]
        fold_ids = sorted({r["fold"] for r in raw})
        head = [
            "no clean-up (`--no-largest-component --min-size 0`)",
            DATASETS[name].title,
            ", ".join(fold_ids),
        ]
        lines += _paired_rows(head, raw, recipe_rows, "same models")
    return {"cleaned": bool(cleaned), "measured": note(root, "ablations"), "rows": lines}


BANDS = ("fp_boundary", "fp_far", "fn_boundary", "fn_far")
"""Wrong-voxel counts of ``error_bands.csv`` (``scripts/error_bands.py``)."""


def _dice_from_counts(true_positive: int, false_positive: int, false_negative: int) -> float:
    return 2 * true_positive / (2 * true_positive + false_positive + false_negative)


def error_bands_section(root: Path) -> dict | None:
    """Where each class's wrong voxels lie (``accuracy/error_bands.csv``), and the mean Dice if
    either kind were fixed: what limits the score."""
    path = root / RESULTS / "accuracy" / "error_bands.csv"
    if not path.exists():
        return None
    rows = read_csv(path)
    table = []
    for name, dataset in DATASETS.items():
        for class_name in dict.fromkeys(r["class"] for r in rows if r["dataset"] == name):
            cases = [
                {k: int(v) for k, v in r.items() if k in ("true_positive", *BANDS)}
                for r in rows
                if r["dataset"] == name and r["class"] == class_name
            ]
            cases = [c for c in cases if c["true_positive"] + c["fn_boundary"] + c["fn_far"]]
            border = sum(c["fp_boundary"] + c["fn_boundary"] for c in cases)
            wrong = sum(c[band] for c in cases for band in BANDS)
            measured, far_removed, border_removed = (
                np.mean([_dice_from_counts(*kept(c)) for c in cases])
                for kept in (
                    lambda c: (
                        c["true_positive"],
                        c["fp_boundary"] + c["fp_far"],
                        c["fn_boundary"] + c["fn_far"],
                    ),
                    lambda c: (
                        c["true_positive"] + c["fn_far"],
                        c["fp_boundary"],
                        c["fn_boundary"],
                    ),
                    lambda c: (c["true_positive"] + c["fn_boundary"], c["fp_far"], c["fn_far"]),
                )
            )
            table.append(
                (dataset.title, class_name, len(cases), f"{border / wrong:.0%}",
                 f"{measured:.3f}", f"{far_removed:.3f}", f"{border_removed:.3f}")
            )  # fmt: skip
    return {
        "image_size": load_recipe(DATASETS["kvasir"].recipe).train["image_size"],
        "measured": note(root, "error-bands"),
        "rows": table,
    }


def _dataset_section(result: Accuracy, raw: Accuracy) -> dict:
    """The table cells of one dataset's section: per class, without the clean-up, per fold."""
    unit = result.dataset.distance_unit
    classes = []
    for class_name in result.classes:
        c = result.of_class(class_name)
        classes.append(
            (class_name, len(c.dice), c.interval, f"{c.dice.std():.3f}",
             f"{np.median(c.dice):.3f}", c.missed, _hd95_text(c, unit, with_misses=False),
             f"{c.nsd.mean():.3f}")
        )  # fmt: skip
    cleaned = [
        (n, raw.of_class(n).interval, _hd95_text(raw.of_class(n), unit)) for n in raw.classes
    ]
    folds = [
        (fold["fold"], fold["cases"],
         *(f"{result.of_class(c, fold['fold']).dice.mean():.3f}" for c in result.classes),
         f"{float(fold['seconds']) / 60:.1f} min", f"{fold['other_jobs_cores']} cores")
        for fold in result.folds
    ]  # fmt: skip
    return {"result": result, "classes": classes, "raw": cleaned if raw else [], "folds": folds}
