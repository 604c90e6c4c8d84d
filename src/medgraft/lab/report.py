"""Every results table and figure in README.md and docs/, regenerated from the committed
per-case and timing CSVs, and nothing else.

The code of ``scripts/report.py``; its docstring lists the sources and what is generated.
"""

from __future__ import annotations

import argparse
import difflib
import posixpath
import re
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medgraft.config.recipes import load_recipe
from medgraft.config.schema import DemoOptions
from medgraft.evaluation.metrics import METRICS
from medgraft.evaluation.stats import RESAMPLES, Interval, difference_interval, mean_interval
from medgraft.files import read_csv
from medgraft.lab import CHECKOUT
from medgraft.lab.measured import note
from medgraft.study import StudyResults, summary_markdown, write_summary

RESULTS = Path("docs/results")
RECIPES = Path("src/medgraft/config/recipes")
STUDIES = {"hippocampus": "MSD hippocampus", "kvasir": "Kvasir-SEG"}


@dataclass(frozen=True)
class Dataset:
    title: str
    recipe: str
    goal: float | None
    published: str
    distance_unit: str


DATASETS = {
    "hippocampus": Dataset(
        "MSD Hippocampus, 180 MRI volumes",
        "mri-2.5d",
        0.89,
        "nnU-Net ≈ 0.90 / 0.89 (Isensee et al., Nat. Methods 2021; MSD test set)",
        "mm",
    ),
    "kvasir": Dataset(
        "Kvasir-SEG, 700 images",
        "rgb-2d",
        0.90,
        "U-Net[ResNet34] 0.876, HarDNet-MSEG 0.904 (880/120 split); PraNet 0.898 (PraNet split)",
        "px",
    ),
    "drive": Dataset(
        "DRIVE, 20 images",
        "retina-2d",
        0.82,
        "U-Net ≈ 0.81, R2U-Net 0.817, LadderNet 0.820 F1 (test set, inside the FOV mask)",
        "px",
    ),
}


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def measured_sentence(root: Path, figure: str, **where: str) -> str:
    """The note of :func:`medgraft.lab.measured.note` as a sentence of its own."""
    text = note(root, figure, **where)
    return f"{text[0].upper()}{text[1:]}."


# -- accuracy ---------------------------------------------------------------------------------


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
    cases, folds = _accuracy_sources(root)
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
    lines += ["", measured_sentence(root, "accuracy")]
    missing = [f"`{d.recipe}` ({d.title})" for n, d in DATASETS.items() if not _has(cases, n)]
    if missing:
        lines += [
            "",
            f"Not measured with the shipped recipe yet, so no figure is reported: "
            f"{', '.join(missing)}.",
        ]
    return "\n".join(lines)


def _has(cases: list[dict], dataset: str) -> bool:
    return any(r["dataset"] == dataset for r in cases)


def _accuracy_sources(root: Path) -> tuple[list[dict], list[dict]]:
    folder = root / RESULTS / "accuracy"
    return read_csv(folder / "cases.csv"), read_csv(folder / "folds.csv")


ACCURACY_METHOD = [
    "## How it was measured",
    "",
    "```bash",
    "python scripts/accuracy_cv.py train --dataset hippocampus   # medgraft train --recipe R "
    "--folds 5 --fold k",
    "python scripts/accuracy_cv.py report --dataset hippocampus  # medgraft predict + "
    "evaluation, per case",
    "python scripts/accuracy_cv.py ablate                        # each change in ABLATIONS",
    "python scripts/report.py                                    # this page, from the CSVs",
    "```",
    "",
    "- **Folds**: 5 folds over all labelled cases, shuffled with seed 0; every case is "
    "validated once. Each fold trains with `medgraft train --recipe R --folds 5 --fold k` "
    "and nothing else changed, except `--stray-labels-to-background` for hippocampus "
    "(`labelsTr/hippocampus_243.nii.gz` holds one voxel of value -2).",
    "- **Checkpoint**: each fold's **last-epoch** model (`last.pt`); a recipe that trains "
    "several views (`mri-2.5d`: axial, coronal, sagittal) has one per view, and the fold's "
    "cases are segmented by their average. The number of epochs and "
    "the post-processing are fixed by the recipe, so a fold's scored cases chose neither its "
    "checkpoint nor its clean-up. The recipes' settings themselves were chosen in earlier "
    "rounds from cross-validation on these same cases: these are development figures. The "
    "datasets' other cases are kept apart for independent evaluation.",
    "- **Recipe identity**: every fold's `config.json` holds the fingerprint of its resolved "
    "options (`options_sha256` in [folds.csv](accuracy/folds.csv)); "
    "`accuracy_cv.py` refuses to reuse a fold whose fingerprint differs from what the "
    "shipped recipe asks for now.",
    "- **Scoring**: `medgraft predict` with the recipe's prediction defaults segments each "
    "fold's validation cases at each image's own resolution; medgraft's evaluation (MONAI "
    "Dice, HD95, NSD) scores them against the original masks. HD95 is in mm for volumes and "
    "pixels for 2D images.",
    "- **Statistics**: means over every validation case of every fold; 95% intervals are "
    f"percentile bootstraps over cases ({RESAMPLES} draws, seed 0). A class the truth holds "
    "but the prediction misses scores Dice 0; its HD95 is infinite, so the HD95 mean leaves "
    "it out and counts it as *missed*.",
    "- **Wall time** is the training of one fold (all its views' runs, data loading "
    "included), the median over "
    "folds; `shared` counts folds during which other jobs used the cores (measured from "
    "`/proc/stat`, see `scripts/provenance.py`).",
    "",
]
"""How the accuracy page's figures were measured: the steps, folds, checkpoint, scoring and
statistics."""


def accuracy_page(root: Path) -> str:
    cases, folds = _accuracy_sources(root)
    machines = sorted({f"{f['cpu']}, {f['cores']} cores, GPU {f['gpu']}" for f in folds})
    versions = sorted({f"torch {f['torch']}, Python {f['python']}" for f in folds})
    lines = [
        "# Accuracy of the shipped recipes: 5-fold cross-validation on the shared real data",
        "",
        "<!-- generated by scripts/report.py from accuracy/cases.csv and accuracy/folds.csv; "
        "edit those or the script, never this page -->",
        "",
        f"Machine: {'; '.join(machines)}; {'; '.join(versions)}. The data are the development "
        "copies in `../shared/data`; their official test cases are not among them, so these "
        "are cross-validation figures, not test-set figures.",
        "",
        *ACCURACY_METHOD,
        "## Results",
        "",
        f"The CV folds: {note(root, 'accuracy')}.",
        "",
    ]
    published = [
        "## Published figures, for orientation",
        "",
        "| data | medgraft (this page, mean foreground Dice) | published |",
        "| --- | --- | --- |",
    ]
    for name, dataset in DATASETS.items():
        result = Accuracy(cases, folds, name, "recipe")
        ours = f"{result.foreground()}" if result else "not measured"
        published.append(f"| {dataset.title} | {ours} | {dataset.published} |")
        if result:
            lines += _dataset_section(name, result, Accuracy(cases, folds, name, "raw"))
        else:
            title = f"### {dataset.title}: `{dataset.recipe}`"
            lines += [title, "", "Not measured with the shipped recipe yet.", ""]
    lines += ablation_section(root, cases, folds)
    lines += error_bands_section(root)
    lines += published
    lines += [
        "",
        "Published figures come from other splits or hidden test sets; the comparison is "
        "indicative only.",
        "",
    ]
    return "\n".join(lines)


def _dice_by_case(rows: list[dict], class_name: str | None) -> dict[str, float]:
    """Dice per case of one class, or the mean over the classes."""
    by_case: dict[str, list[float]] = {}
    for row in rows:
        if class_name is None or row["class"] == class_name:
            by_case.setdefault(row["case"], []).append(float(row["dice"]))
    return {case: float(np.mean(values)) for case, values in by_case.items()}


def _wall_text(folds: list[dict]) -> str:
    """Median wall time of the folds, marked when any shared the cores with other jobs."""
    minutes = median([float(f["seconds"]) for f in folds]) / 60
    shared = sum(f["shared"] == "yes" for f in folds)
    return f"{minutes:.1f} min" + (
        f" ({shared} of {len(folds)} shared the cores)" if shared else ""
    )


def _arms_wall_text(arms: list[list[dict]]) -> str:
    """Each arm's median wall time; each names its processor when the arms ran on different
    ones, whose times do not compare."""
    texts = [_wall_text(arm) for arm in arms]
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
        first, second = _paired_dice(rows, recipe_rows, class_name)
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


def ablation_section(root: Path, cases: list[dict], folds: list[dict]) -> list[str]:
    """One row per change and class: the recipe and the change on the same folds and cases,
    with the paired difference's interval (``accuracy/ablations.csv``). The recipe's clean-up
    is an ablation too: its CV models scored without it (variant ``raw``), class by class, as
    nnU-Net chooses its post-processing."""
    path = root / RESULTS / "accuracy" / "ablations.csv"
    changed = read_csv(path)
    changed_folds = read_csv(path.with_name("ablation_folds.csv"))
    cleaned = [name for name in DATASETS if Accuracy(cases, folds, name, "raw")]
    if not (changed or cleaned):
        return []
    lines = [
        "## Ablations: what each change buys",
        "",
        "Each change is one option added to the shipped recipe, trained on the folds named with "
        "the CV's split and scored like the CV; the recipe's figures are its CV rows for the "
        "same folds and cases. A change measured before the recipe took up another row's "
        "change says *against* that row, whose runs it is then paired with. Differences are "
        "paired over cases [95% bootstrap]; one training run per arm, so run-to-run variation "
        "is not in the interval."
        + (
            " Rows without the clean-up score the CV's own models without it, so they need no "
            "training."
            if cleaned
            else ""
        ),
        "",
        f"The changed arms: {note(root, 'ablations')}.",
        "",
        "| change | data | folds, cases | class | recipe | with the change | difference "
        "| verdict | wall time per fold: recipe, change |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
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
    return [*lines, ""]


BANDS = ("fp_boundary", "fp_far", "fn_boundary", "fn_far")
"""Wrong-voxel counts of ``error_bands.csv`` (``scripts/error_bands.py``)."""


def _dice_from_counts(true_positive: int, false_positive: int, false_negative: int) -> float:
    return 2 * true_positive / (2 * true_positive + false_positive + false_negative)


def error_bands_section(root: Path) -> list[str]:
    """Where each class's wrong voxels lie (``accuracy/error_bands.csv``), and the mean Dice if
    either kind were fixed: what limits the score."""
    path = root / RESULTS / "accuracy" / "error_bands.csv"
    if not path.exists():
        return []
    rows = read_csv(path)
    lines = [
        "## Where the errors lie",
        "",
        "The CV's predictions (`python scripts/error_bands.py --dataset D`), each wrong voxel "
        "classed as touching the truth's border (a false positive next to the structure, a false "
        "negative in its outermost layer) or far from it (a part missed or invented outright). "
        "The last two columns recompute each case's Dice with one kind of error removed, then "
        "average over cases: how much each kind costs. A vessel one or two pixels wide lies "
        "entirely in its outermost layer, so for DRIVE a missed thin vessel counts as a border "
        "error. The border is one voxel wide at the scoring resolution: Kvasir's masks are "
        f"predicted at {load_recipe(DATASETS['kvasir'].recipe).train['image_size']} px and "
        "resized to each image's own size, several times larger, so a slip of one model pixel "
        "there counts as far.",
        "",
        f"The error bands: {note(root, 'error-bands')}.",
        "",
        "| data | class | cases | wrong voxels touching the border | Dice | Dice, far errors "
        "removed | Dice, border errors removed |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
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
            lines.append(
                f"| {dataset.title} | {class_name} | {len(cases)} | {border / wrong:.0%} "
                f"| {measured:.3f} | {far_removed:.3f} | {border_removed:.3f} |"
            )
    return [*lines, ""]


def _dataset_section(name: str, result: Accuracy, raw: Accuracy) -> list[str]:
    unit = result.dataset.distance_unit
    lines = [
        f"### {result.dataset.title}: `{result.dataset.recipe}`",
        "",
        f"{len(result.fold_ids)} folds, {result.case_count} validation cases; goal "
        f"{result.goal_text()}; mean foreground Dice {result.foreground()}.",
        "",
        "| class | cases | Dice mean [95% CI] | std | median | missed | HD95 (mean of the rest) "
        "| NSD |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for class_name in result.classes:
        c = result.of_class(class_name)
        lines.append(
            f"| {class_name} | {len(c.dice)} | {c.interval} | {c.dice.std():.3f} "
            f"| {np.median(c.dice):.3f} | {c.missed} | {_hd95_text(c, unit, with_misses=False)} "
            f"| {c.nsd.mean():.3f} |"
        )
    if raw:
        lines += [
            "",
            "Without the recipe's clean-up (`--no-largest-component --min-size 0`), same models:",
            "",
            "| class | Dice mean [95% CI] | HD95 |",
            "| --- | --- | --- |",
        ]
        for class_name in raw.classes:
            c = raw.of_class(class_name)
            lines.append(f"| {class_name} | {c.interval} | {_hd95_text(c, unit)} |")
    lines += [
        "",
        "| fold | cases | "
        + " | ".join(f"{c} Dice" for c in result.classes)
        + " | training wall time | other jobs on the cores |",
        "| --- | --- |" + " --- |" * len(result.classes) + " --- | --- |",
    ]
    for fold in result.folds:
        means = [result.of_class(c, fold["fold"]).dice.mean() for c in result.classes]
        lines.append(
            f"| {fold['fold']} | {fold['cases']} | "
            + " | ".join(f"{m:.3f}" for m in means)
            + f" | {float(fold['seconds']) / 60:.1f} min | {fold['other_jobs_cores']} cores |"
        )
    lines += [
        "",
        f"Median wall time per fold {result.median_fold_minutes():.1f} min; "
        f"{result.shared_folds()} of {len(result.folds)} folds shared the cores with other jobs.",
        "",
    ]
    return lines


def recipe_measured_block(root: Path, name: str) -> str:
    """The ``measured:`` block that ends a recipe file: what ``medgraft recipes`` shows."""
    cases, folds = _accuracy_sources(root)
    result = Accuracy(cases, folds, name, "recipe")
    dataset = DATASETS[name]
    lines = ["measured:  # written by scripts/report.py from docs/results/accuracy/*.csv"]
    if not result:
        return "\n".join([*lines, '  result: "not measured with this recipe yet"', ""])
    per_class = ", ".join(f"{c} {result.of_class(c).dice.mean():.3f}" for c in result.classes)
    machine = folds_machine([f for f in folds if f["dataset"] == name])
    lines += [
        f"  dataset: {dataset.title} (../shared/data), {len(result.fold_ids)}-fold CV, "
        "last-epoch models",
        f'  result: "Dice {per_class} (mean {result.foreground().mean:.3f}); goal '
        f'{result.goal_text()}"',
        f"  wall_time: {result.median_fold_minutes():.1f} min per fold (median of "
        f"{len(result.folds)})",
        f"  hardware: {machine}",
        "  report: docs/results/accuracy.md",
        "",
    ]
    return "\n".join(lines)


def folds_machine(folds: list[dict]) -> str:
    first = folds[0]
    return f"{first['cpu']}, {first['cores']} cores, GPU {first['gpu']}, torch {first['torch']}"


def recipe_file(root: Path, name: str) -> str:
    path = root / RECIPES / f"{DATASETS[name].recipe}.yaml"
    text = path.read_text()
    head = text[: text.index("\nmeasured:") + 1] if "\nmeasured:" in text else text
    return head + recipe_measured_block(root, name)


# -- the transfer studies ---------------------------------------------------------------------


def study_folders(root: Path) -> dict[str, Path]:
    return {
        name: root / RESULTS / f"study_{name}"
        for name in STUDIES
        if (root / RESULTS / f"study_{name}" / "cases.csv").exists()
    }


def study_readme(root: Path) -> str:
    folders = study_folders(root)
    if not folders:
        return "No study on the shared data has been measured with this version yet."
    lines = [
        "| data | init | "
        + " | ".join(f"{f:.0%} of the labels" for f in _fractions(folders))
        + " |",
        "| --- | --- |" + " --- |" * len(_fractions(folders)),
    ]
    claims = []
    for name, folder in folders.items():
        results = StudyResults.read(folder)
        seeds = len({r["seed"] for r in results.runs})
        validation = len({r["case"] for r in results.cases})
        largest = max(results.fractions)
        title = (
            f"[{STUDIES[name]}]({folder.relative_to(root)}/summary.md), "
            f"{results.train_cases(largest)} training cases at {largest:.0%}, "
            f"{results.plan['epochs']} epochs, {seeds} seeds, {validation} validation cases"
        )
        for index, init in enumerate(results.inits):
            cells = [str(results.interval(init, f) or "-") for f in _fractions(folders)]
            label = {"imagenet": "ImageNet", "none": "scratch"}.get(init, init)
            lines.append(f"| {title if index == 0 else ''} | {label} | " + " | ".join(cells) + " |")
        for fraction in results.fractions:
            difference = results.versus_scratch("imagenet", fraction)
            if difference is not None:
                claims.append(
                    f"{STUDIES[name]}, {fraction:.0%} of the labels: ImageNet is "
                    f"**{difference.verdict}** (difference {difference})"
                )
    return "\n".join(
        [
            *lines,
            "",
            "Last-epoch mean foreground Dice on the study's fixed validation cases, mean over "
            "seeds and cases [95% bootstrap interval over both]. Against scratch at the same "
            "label fraction, from the interval of the difference:",
            "",
            *[f"- {claim}." for claim in claims],
            "",
            *[f"{STUDIES[name]}: {note(root, 'study', name=name)}." for name in folders],
        ]
    )


def _fractions(folders: dict[str, Path]) -> list[float]:
    return sorted({f for folder in folders.values() for f in StudyResults.read(folder).fractions})


# -- demo and benchmarks -------------------------------------------------------------------------


def demo_case_rows(root: Path) -> list[dict[str, str]]:
    """``dice.csv``: the held-out cases' scores of each measured run (``run``, ``commit``)."""
    return read_csv(root / RESULTS / "demo" / "dice.csv")


def demo_scores(rows: list[dict[str, str]]) -> dict[str, dict[str, float]]:
    """``{metric: {class: mean over the cases}}`` of one run's rows, as ``medgraft evaluate``
    summarises (non-finite values left out), and ``{"mean": {"dice": ...}}``: the mean of
    the class means."""
    scores: dict[str, dict[str, float]] = {}
    for column in rows[0]:
        if "_" in column and column not in ("case_id", "mean_dice"):
            metric, name = column.split("_", 1)
            values = np.array([float(r[column]) for r in rows])
            scores.setdefault(metric, {})[name] = float(values[np.isfinite(values)].mean())
    scores["mean"] = {"dice": float(np.mean(list(scores["dice"].values())))}
    return scores


def demo_runs_scores(root: Path) -> list[dict[str, dict[str, float]]]:
    """Each measured run's summary (:func:`demo_scores`), in run order."""
    rows = demo_case_rows(root)
    runs = sorted({int(r["run"]) for r in rows})
    return [demo_scores([r for r in rows if int(r["run"]) == run]) for run in runs]


def demo_runs(root: Path) -> list[dict]:
    return read_csv(root / RESULTS / "demo" / "runs.csv")


def _range(values: list[float], form: str) -> str:
    """One value when every run gave it (at the shown precision), else 'low to high'."""
    low, high = format(min(values), form), format(max(values), form)
    return low if low == high else f"{low} to {high}"


def demo_timing(runs: list[dict], commit: str) -> str:
    """The demo's wall time at the scores' commit (median and range), the install's median."""
    demo = [
        float(r["wall_seconds"]) for r in runs if r["command"] == "demo" and r["commit"] == commit
    ]
    install = [float(r["wall_seconds"]) for r in runs if r["command"] == "install"]
    if not demo or not install:
        return "Install and demo times: not measured with this version"
    alone = sum(
        r["shared"] == "no" for r in runs if r["command"] == "demo" and r["commit"] == commit
    )
    return (
        f"Measured on {runs[-1]['cores']} CPU cores ({runs[-1]['cpu']}): demo "
        f"{median(demo):.0f} s (median of {len(demo)} runs at {commit}, range "
        f"{_range(demo, '.0f')} s, {alone} with the cores to itself), install "
        f"{median(install) / 60:.1f} min (median of {len(install)}), in "
        "[docs/results/demo/runs.csv](docs/results/demo/runs.csv)"
    )


def demo_readme(root: Path) -> str:
    rows, runs = demo_case_rows(root), demo_runs_scores(root)
    held_out = len({r["case_id"] for r in rows})
    data = root / DemoOptions().data
    labelled = len(list((data / "imagesTr").glob("*.nii.gz")))
    unlabelled = len(list((data / "imagesTs").glob("*.nii.gz")))
    classes = list(runs[0]["dice"])
    per_class = ", ".join(f"{n} {_range([run['dice'][n] for run in runs], '.3f')}" for n in classes)
    hd95 = " / ".join(_range([run["hd95"][n] for run in runs], ".1f") for n in classes)
    mean = _range([run["mean"]["dice"] for run in runs], ".3f")
    return (
        f"trains a 2.5D U-Net for {DemoOptions().epochs} epochs on {labelled - held_out} of the "
        f"{labelled} embedded hippocampus cases, segments the {held_out} held-out cases and the "
        f"{unlabelled} unlabelled ones (NIfTI masks with the input's affine and header) with the "
        "model of the last epoch, so the held-out cases choose no checkpoint, and prints Dice, "
        f"HD95 and surface Dice per class. {demo_timing(demo_runs(root), rows[-1]['commit'])}; "
        f"mean foreground Dice {mean} on the {held_out} held-out cases over {len(runs)} runs "
        f"({per_class}; HD95 {hd95} mm), per case and run in "
        f"[docs/results/demo/dice.csv](docs/results/demo/dice.csv); the Dice: "
        f"{note(root, 'demo')}."
    )


def demo_page(root: Path) -> str:
    runs = demo_runs(root)
    lines = [
        "# Demo result (per case)",
        "",
        "<!-- generated by scripts/report.py from dice.csv and runs.csv -->",
        "",
        "`dice.csv` holds what `medgraft demo` (seed 0, offline) scored in each run measured by "
        "`scripts/measure_demo.py`: the held-out cases of the embedded data, segmented with the "
        "model of the last epoch (they chose no checkpoint), mean foreground Dice "
        f"{_range([run['mean']['dice'] for run in demo_runs_scores(root)], '.3f')}. `runs.csv` "
        "holds every timed install and demo run, each with its commit.",
        "",
        f"The Dice: {note(root, 'demo')}.",
        "",
        "The timed runs:",
        "",
        "| date | commit | command | wall time | other jobs on the cores | machine |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        lines.append(
            f"| {r['date']} | {r['commit']} | {r['command']} | {float(r['wall_seconds']):.0f} s "
            f"| {r['other_jobs_cores']} cores | {r['cpu']}, {r['cores']} cores, torch "
            f"{r['torch']} |"
        )
    return "\n".join([*lines, ""])


def bench_rows(root: Path, name: str) -> list[dict]:
    return read_csv(root / RESULTS / "bench" / f"{name}.csv")


def bench_train_readme(root: Path) -> str:
    rows = bench_rows(root, "train")
    if not rows:
        return "not measured with this version"
    parts = []
    for augment in ("off", "on"):
        runs = [r for r in rows if r["augment"] == augment]
        if runs:
            speed = median([float(r["pipeline_slices_per_s"]) for r in runs])
            ratio = median([float(r["ratio"]) for r in runs])
            parts.append(f"augmentation {augment}: {speed:.0f} slices/s, ratio {ratio:.2f}")
    rss = median([float(r["peak_rss_gb"]) for r in rows])
    return (
        f"{rows[0]['cases']} hippocampus cases, {rows[0]['cores']} CPU cores, after the first "
        f"epoch, medians of {len(rows)} runs in "
        "[docs/results/bench/train.csv](docs/results/bench/train.csv): "
        + "; ".join(parts)
        + f"; peak RSS {rss:.1f} GB"
    )


def bench_predict_readme(root: Path) -> str:
    rows = bench_rows(root, "predict")
    if not rows:
        return "not measured with this version"
    rss = median([float(r["large_volume_peak_rss_gb"]) for r in rows])
    return (
        f"a synthetic {rows[0]['large_volume_shape']} volume peaked at {rss:.1f} GB RSS on the "
        f"CPU (median of {len(rows)} runs of `scripts/bench_predict.py`, batch "
        f"{rows[0]['batch_size']}, in [docs/results/bench/predict.csv]"
        "(docs/results/bench/predict.csv))"
    )


def bench_amp_cpu_readme(root: Path) -> str:
    """fp32 against bf16 autocast on the CPU, medians per precision (``bench_amp_cpu.py``)."""
    rows = bench_rows(root, "amp_cpu")
    if not rows:
        return "not measured with this version"
    speed = {
        precision: median([float(r["samples_per_s"]) for r in rows if r["precision"] == precision])
        for precision in ("fp32", "bf16")
    }
    first = rows[0]
    shared = sum(r["shared"] == "yes" for r in rows)
    slower = speed["bf16"] < speed["fp32"]
    factor = (
        f"{speed['fp32'] / speed['bf16']:.1f}x slower"
        if slower
        else f"{speed['bf16'] / speed['fp32']:.1f}x faster"
    )
    verdict = "so fp32 stays the CPU default" if slower else "a speed-up whose Dice is not measured"
    return (
        f"on this {first['cores']}-core {first['cpu']} (torch CPU capability "
        f"{first['cpu_capability']}, bf16/AMX flags: {first['cpu_bf16_flags']}) a training step "
        f"of the `{first['recipe']}` recipe ran {speed['fp32']:.1f} samples/s in fp32 and "
        f"{speed['bf16']:.1f} under bf16 autocast, {factor} (medians of {len(rows) // 2} runs "
        f"each, {shared} of {len(rows)} runs shared the cores, "
        f"[docs/results/bench/amp_cpu.csv](docs/results/bench/amp_cpu.csv)), {verdict} "
        f"({note(root, 'amp-cpu')})"
    )


def _cpu_fold_rows(root: Path, fold: int) -> tuple[list[dict], list[dict]]:
    """The CPU CV's per-case scores and fold record of one hippocampus fold."""
    cases, folds = _accuracy_sources(root)
    return (
        [r for r in cases if r["dataset"] == "hippocampus" and r["variant"] == "recipe"
         and int(r["fold"]) == fold],
        [f for f in folds if f["dataset"] == "hippocampus"],
    )  # fmt: skip


def _gpu_fold(root: Path) -> tuple[dict, list[dict]] | None:
    """The GPU fold's record and per-case scores (``bench_gpu.py``), the latest run."""
    folds, cases = bench_rows(root, "gpu_fold"), bench_rows(root, "gpu_fold_cases")
    return (folds[-1], cases) if folds and cases else None


def _gpu_wall_text(fold: dict) -> str:
    """The GPU fold's training time: one run, with the load on the machine's cores."""
    load = "cores shared" if fold["shared"] == "yes" else "cores alone"
    return (
        f"{float(fold['wall_seconds']) / 60:.1f} min in one run with the {load} "
        f"({fold['other_jobs_cores']} cores of other jobs)"
    )


def _gpu_and_cpu(root: Path) -> tuple[dict, list[dict], list[dict], list[dict]]:
    """The GPU fold's record and per-case scores, the CPU fold's scores, the CPU folds."""
    fold, gpu_cases = _gpu_fold(root)
    cpu_cases, cpu_folds = _cpu_fold_rows(root, int(fold["fold"]))
    return fold, gpu_cases, cpu_cases, cpu_folds


def _paired_dice(
    first: list[dict], second: list[dict], class_name: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Dice of the cases both scored (one class, or the class mean), in the same order."""
    ours, theirs = _dice_by_case(first, class_name), _dice_by_case(second, class_name)
    common = sorted(set(ours) & set(theirs))
    return np.array([ours[c] for c in common]), np.array([theirs[c] for c in common])


def bench_gpu_readme(root: Path) -> str:
    """One GPU against 2 CPU cores on the hippocampus recipe's fold (``bench_gpu.py``)."""
    if _gpu_fold(root) is None:
        return "not measured with this version"
    fold, gpu_cases, cpu_cases, cpu_folds = _gpu_and_cpu(root)
    gpu, cpu = _paired_dice(gpu_cases, cpu_cases, None)
    dice, difference = mean_interval(gpu), difference_interval(gpu, cpu)
    return (
        f"on one {fold['gpu']} the recipe's fold {fold['fold']} trained in "
        f"{_gpu_wall_text(fold)}, with {fold['views']} views, `--amp "
        f"{fold['amp'].split()[0]}` and {fold['num_workers']} DataLoader workers (on 2 CPU cores "
        f"the median of {len(cpu_folds)} folds took {_wall_text(cpu_folds)}), and scored "
        f"{dice.mean:.3f} mean Dice on its "
        f"{fold['cases']} validation cases, {difference} against the CPU-trained fold: "
        f"{difference.verdict} ([docs/results/gpu.md](docs/results/gpu.md); "
        f"{note(root, 'gpu')})"
    )


def gpu_page(root: Path) -> str:
    """The GPU measurements of ``bench_gpu.py``: the fold, prediction, the model alone."""
    fold, gpu_cases, cpu_cases, cpu_folds = _gpu_and_cpu(root)
    lines = [
        "# One CUDA GPU",
        "",
        "Generated by `python scripts/report.py` from `docs/results/bench/gpu_*.csv`, written "
        "by `python scripts/bench_gpu.py` (see its docstring). Machine: "
        f"{fold['gpu']}, {fold['cores']} CPU cores ({fold['cpu']}), Python {fold['python']}, "
        f"torch {fold['torch']}, medgraft {fold['medgraft']} at commit {fold['commit']}, "
        f"{fold['date']}.",
        "",
        f"The fold and its scores: {note(root, 'gpu')}.",
        "",
        f"## The hippocampus recipe, CV fold {fold['fold']}",
        "",
        f"`{fold['recipe']}` trained on the accuracy CV's fold {fold['fold']} "
        f"({fold['views']} views in one `medgraft train` call, `--device cuda --amp "
        f"{fold['amp'].split()[0]}` ({fold['amp'].split()[-1].strip('()')} autocast), "
        f"`--num-workers {fold['num_workers']}`), "
        f"scored like the CV: the views' last-epoch models averaged, the recipe's clean-up, on "
        f"the fold's {fold['cases']} validation cases (the same cases as the CPU fold: "
        f"{fold['same_split']}). Training took {_gpu_wall_text(fold)}; the "
        f"loop ran {fold['loop_slices_per_s']} slices/s (median over "
        "views and epochs after the first). On 2 CPU cores the median fold of "
        f"{len(cpu_folds)} takes {_wall_text(cpu_folds)}.",
        "",
        "| class | CPU-trained fold: Dice | GPU-trained fold: Dice | GPU - CPU [95% CI] | "
        "verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for class_name in [*dict.fromkeys(r["class"] for r in gpu_cases), None]:
        gpu, cpu = _paired_dice(gpu_cases, cpu_cases, class_name)
        change = difference_interval(gpu, cpu)
        lines.append(
            f"| {class_name or 'mean foreground'} | {mean_interval(cpu)} | "
            f"{mean_interval(gpu)} | {change} | {change.verdict} |"
        )
    lines += [
        "",
        "One training run per arm on different hardware and precision, so the interval holds "
        "the case-to-case spread, not run-to-run variation.",
        "",
        "## Prediction",
        "",
        "`medgraft predict` with the fold's three last-epoch models on its validation cases, one "
        "call per row (start-up, model loading and writing the masks included):",
        "",
        "| `--amp` | calls | cases per call | seconds per case (median) |",
        "| --- | --- | --- | --- |",
    ]
    predict = bench_rows(root, "gpu_predict")
    for amp in dict.fromkeys(r["amp"] for r in predict):
        runs = [r for r in predict if r["amp"] == amp]
        lines.append(
            f"| {amp} | {len(runs)} | {runs[0]['cases']} | "
            f"{median([float(r['seconds_per_case']) for r in runs]):.2f} |"
        )
    model = bench_rows(root, "gpu_train")
    lines += [
        "",
        "## The model alone",
        "",
        "Forward, backward and optimizer step on tensors already on the GPU "
        f"({model[0]['image_size']}, {model[0]['steps']} steps after 2 of warm-up), the "
        "medians over the repeats. A step takes about as long at batch 256 as at 32: at these "
        "small inputs the GPU waits on kernel launches rather than computing, so this loop is no "
        "guide to the precision of the real one above, and repeats vary:",
        "",
        "| precision | batch | runs | slices/s (median; min to max) | peak GPU memory |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key in dict.fromkeys((r["precision"], r["batch_size"]) for r in model):
        runs = [r for r in model if (r["precision"], r["batch_size"]) == key]
        speeds = [float(r["slices_per_s"]) for r in runs]
        lines.append(
            f"| {key[0]} | {key[1]} | {len(runs)} | {median(speeds):.0f}; "
            f"{min(speeds):.0f} to {max(speeds):.0f} | {runs[0]['peak_gpu_memory_gib']} GiB |"
        )
    return "\n".join([*lines, ""])


# -- putting it together --------------------------------------------------------------------------

# -- learning speed ------------------------------------------------------------------------------

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
            by_case = _dice_by_case(rows, class_name)
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


def overview_readme(root: Path) -> str:
    """The learning-speed and transfer results in one small table: medgraft with the ImageNet
    encoder against scratch (and nnU-Net) at the first and last CPU-minute point and at each
    study's label fractions."""
    speed, folders = LearningSpeed.read(root), study_folders(root)
    if speed is None and not folders:
        return "Not measured with this version."
    lines = [
        "| measured on | ImageNet encoder | from scratch | nnU-Net v2 `2d` "
        "| ImageNet against scratch |",
        "| --- | --- | --- | --- | --- |",
    ]
    methods = ("medgraft-imagenet", "medgraft-scratch", "nnunet-2d")
    if speed is not None and set(methods[:2]) <= set(speed.methods):
        for point in sorted({speed.point_minutes[0], speed.point_minutes[-1]}):
            cells = [str(speed.interval(m, point) or "-") for m in methods]
            difference = speed.difference(*methods[:2], point)
            verdict = f"**{difference.verdict}**, {difference}" if difference is not None else "-"
            lines.append(
                f"| hippocampus fold 0, after {point} CPU-minutes of training | "
                + " | ".join(cells)
                + f" | {verdict} |"
            )
    for name, folder in folders.items():
        results = StudyResults.read(folder)
        for fraction in results.fractions:
            difference = results.versus_scratch("imagenet", fraction)
            if difference is None:
                continue
            cells = [str(results.interval(init, fraction) or "-") for init in ("imagenet", "none")]
            lines.append(
                f"| {STUDIES[name]}, {results.train_cases(fraction)} training cases "
                f"({fraction:.0%} of the labels), {results.plan['epochs']} epochs | "
                + " | ".join(cells)
                + f" | - | **{difference.verdict}**, {difference} |"
            )
    return "\n".join(
        [
            *lines,
            "",
            "Mean foreground Dice on held-out validation cases [95% bootstrap interval]; the "
            "verdict comes from the interval of the difference. How each was measured, with "
            "seeds, per-class scores and nnU-Net v2 `3d_fullres`: [results](docs/results.md). "
            f"The CPU-minute rows: {note(root, 'learning-speed')}; "
            + "; ".join(
                f"the {STUDIES[name]} study: {note(root, 'study', name=name)}"
                for name in study_folders(root)
            )
            + ".",
        ]
    )


BLOCKS: dict[str, Callable[[Path], str]] = {
    "overview": overview_readme,
    "demo": demo_readme,
    "accuracy": accuracy_readme,
    "study": study_readme,
    "bench-train": bench_train_readme,
    "bench-predict": bench_predict_readme,
    "bench-amp-cpu": bench_amp_cpu_readme,
    "bench-gpu": bench_gpu_readme,
    "learning-speed": learning_speed_readme,
}
"""Every generated block by name. Each lives in one of the pages ``block_pages`` lists."""
BLOCK = re.compile(
    r"(<!-- report:(?P<name>[\w-]+) -->)(?P<body>.*?)(<!-- /report:(?P=name) -->)", re.S
)
"""A generated block. A block whose opening marker ends its line holds Markdown blocks (tables,
lists) between marker lines; otherwise it is inline text inside a paragraph."""
LINK = re.compile(r"\]\((?![a-z]+:|#|/)(?P<target>[^)\s]+)\)")
"""A Markdown link to a file of the checkout (not a web address, an anchor or an absolute path)."""


def block_pages(root: Path) -> list[Path]:
    """The pages that may hold generated blocks: README.md and every ``docs/*.md``."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def relink(text: str, folder: str) -> str:
    """``text``'s links, written from the checkout's root, made relative to ``folder`` (the
    folder, from the root, of the page the text goes into)."""
    return LINK.sub(lambda m: f"]({posixpath.relpath(m['target'], folder)})", text)


def block_locations(root: Path) -> dict[str, Path]:
    """Block name → the one page that holds it; a name in no page, in two pages or unknown to
    ``BLOCKS`` stops the report."""
    found: dict[str, list[Path]] = {}
    for page in block_pages(root):
        for match in BLOCK.finditer(page.read_text()):
            found.setdefault(match["name"], []).append(page)
    problems = [
        f"{page.relative_to(root)}: unknown report block {name!r}"
        for name, pages in sorted(found.items())
        if name not in BLOCKS
        for page in pages
    ]
    problems += [
        f"report block {name!r} is in more than one place: "
        + ", ".join(str(p.relative_to(root)) for p in pages)
        for name, pages in sorted(found.items())
        if len(pages) > 1
    ]
    problems += [f"report block {name!r} is in no page" for name in BLOCKS if name not in found]
    if problems:
        raise SystemExit("; ".join(problems))
    return {name: pages[0] for name, pages in found.items()}


def with_blocks(root: Path) -> dict[Path, str]:
    """Each page holding report blocks, path → its text with every block filled from its
    sources, its links relative to the page."""
    pages = sorted(set(block_locations(root).values()))

    def filled(page: Path) -> str:
        folder = page.parent.relative_to(root).as_posix()

        def fill(match: re.Match) -> str:
            body = relink(BLOCKS[match["name"]](root), folder)
            if match["body"].startswith("\n"):
                body = f"\n{body}\n"
            return match[1] + body + match[4]

        return BLOCK.sub(fill, page.read_text())

    return {page: filled(page) for page in pages}


def generated(root: Path) -> dict[Path, str]:
    """Every generated text file, path → the content its sources give."""
    files = {
        **with_blocks(root),
        root / RESULTS / "accuracy.md": accuracy_page(root),
        root / RESULTS / "demo" / "README.md": demo_page(root),
    }
    if LearningSpeed.read(root) is not None:
        files[root / RESULTS / "learning_speed.md"] = learning_speed_page(root)
    if _gpu_fold(root) is not None:
        files[root / RESULTS / "gpu.md"] = gpu_page(root)
    for folder in study_folders(root).values():
        files[folder / "summary.md"] = summary_markdown(StudyResults.read(folder))
    for name, dataset in DATASETS.items():
        files[root / RECIPES / f"{dataset.recipe}.yaml"] = recipe_file(root, name)
    return files


def differences(root: Path) -> list[str]:
    """A unified diff per file whose text differs from what its sources give."""
    diffs = []
    for path, text in generated(root).items():
        current = path.read_text() if path.exists() else ""
        if current != text:
            name = str(path.relative_to(root))
            diffs.append(
                "".join(
                    difflib.unified_diff(
                        current.splitlines(keepends=True),
                        text.splitlines(keepends=True),
                        f"{name} (committed)",
                        f"{name} (from its sources)",
                    )
                )
            )
    return diffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    parser.add_argument("--root", type=Path, default=CHECKOUT)
    args = parser.parse_args()
    if args.check:
        diffs = differences(args.root)
        sys.stdout.write("".join(diffs))
        if diffs:
            sys.exit(
                f"{len(diffs)} file(s) differ from their sources; run python scripts/report.py"
            )
        print("every generated table matches its sources")
        return
    for path, text in generated(args.root).items():
        path.write_text(text)
        print(f"wrote {path.relative_to(args.root)}")
    for folder in study_folders(args.root).values():
        write_summary(folder)  # and its plots
    learning_speed_plot(args.root)
