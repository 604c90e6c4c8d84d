"""Every results table and figure in README.md and docs/results, regenerated from the committed
per-case and timing CSVs, and nothing else.

    python scripts/report.py           # rewrite them (and redraw the figures)
    python scripts/report.py --check   # exit 1, showing the difference, when any text differs

Sources (all under ``docs/results/``):

- ``accuracy/cases.csv`` and ``accuracy/folds.csv`` (``scripts/accuracy_cv.py report``): per
  fold, case and class Dice, HD95 and NSD of each fold's last-epoch model; per fold the options
  fingerprint, wall time, machine, and the cores other jobs used meanwhile;
- ``study_<data>/{plan.json,results.csv,cases.csv,curves.csv}`` (``scripts/real_data_study.py``);
- ``demo/dice.csv`` (``medgraft demo``) and ``demo/runs.csv`` (``scripts/time_command.py``);
- ``bench/train.csv`` and ``bench/predict.csv`` (``scripts/bench_train.py``, ``bench_predict.py``).

Generated: the README's blocks between ``<!-- report:NAME -->`` and ``<!-- /report:NAME -->``,
``accuracy.md``, ``demo/README.md``, each study's ``summary.md`` and plots, ``bench/README.md``
and the ``measured:`` block that ends each shipped recipe. Intervals are seeded bootstraps, so
the same sources always give the same text.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import re
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medgraft.config.schema import DemoOptions
from medgraft.evaluation.stats import RESAMPLES, Interval, mean_interval
from medgraft.study import StudyResults, summary_markdown, write_summary

ROOT = Path(__file__).resolve().parents[1]
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


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def median(values: list[float]) -> float:
    return float(statistics.median(values))


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
        values = {m: np.array([float(r[m]) for r in rows]) for m in ("dice", "hd95", "nsd")}
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
        "## How it was measured",
        "",
        "```bash",
        "python scripts/accuracy_cv.py train --dataset hippocampus   # medgraft train --recipe R "
        "--folds 5 --fold k",
        "python scripts/accuracy_cv.py report --dataset hippocampus  # medgraft predict + "
        "evaluation, per case",
        "python scripts/report.py                                    # this page, from the CSVs",
        "```",
        "",
        "- **Folds**: 5 folds over all labelled cases, shuffled with seed 0; every case is "
        "validated once. Each fold trains with `medgraft train --recipe R --folds 5 --fold k` "
        "and nothing else changed, except `--stray-labels-to-background` for hippocampus "
        "(`labelsTr/hippocampus_243.nii.gz` holds one voxel of value -2).",
        "- **Checkpoint**: each fold's **last-epoch** model (`last.pt`). The number of epochs and "
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
        "- **Wall time** is the training of one fold (data loading included), the median over "
        "folds; `shared` counts folds during which other jobs used the cores (measured from "
        "`/proc/stat`, see `scripts/provenance.py`).",
        "",
        "## Results",
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
    lines += published
    lines += [
        "",
        "Published figures come from other splits or hidden test sets; the comparison is "
        "indicative only.",
        "",
    ]
    return "\n".join(lines)


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
        ]
    )


def _fractions(folders: dict[str, Path]) -> list[float]:
    return sorted({f for folder in folders.values() for f in StudyResults.read(folder).fractions})


# -- demo and benchmarks -------------------------------------------------------------------------


def demo_scores(root: Path) -> dict[str, dict[str, float]]:
    """The MEAN row of the demo's ``dice.csv``, as ``{metric: {class: value}}``."""
    rows = read_csv(root / RESULTS / "demo" / "dice.csv")
    mean = next(r for r in rows if r["case_id"] == "MEAN")
    scores: dict[str, dict[str, float]] = {}
    for column, value in mean.items():
        if "_" in column and column != "case_id":
            metric, name = column.split("_", 1)
            scores.setdefault(metric, {})[name] = float(value)
    return scores


def demo_cases(root: Path) -> int:
    return sum(
        r["case_id"] not in ("MEAN", "STD") for r in read_csv(root / RESULTS / "demo" / "dice.csv")
    )


def demo_runs(root: Path) -> list[dict]:
    path = root / RESULTS / "demo" / "runs.csv"
    return read_csv(path) if path.exists() else []


def demo_timing(runs: list[dict]) -> str:
    """Install and demo wall time: medians of the timed runs, with how many had the cores."""
    demo = [float(r["wall_seconds"]) for r in runs if r["command"] == "demo"]
    install = [float(r["wall_seconds"]) for r in runs if r["command"] == "install"]
    if not demo or not install:
        return "Install and demo times: not measured with this version"
    alone = sum(r["shared"] == "no" for r in runs if r["command"] == "demo")
    return (
        f"Measured on {runs[-1]['cores']} CPU cores: install {median(install) / 60:.1f} min, "
        f"demo {median(demo):.0f} s (medians of {len(install)} and {len(demo)} runs, {alone} of "
        "the demo runs with the cores to itself, in "
        "[docs/results/demo/runs.csv](docs/results/demo/runs.csv))"
    )


def demo_readme(root: Path) -> str:
    scores, held_out = demo_scores(root), demo_cases(root)
    data = root / DemoOptions().data
    labelled = len(list((data / "imagesTr").glob("*.nii.gz")))
    unlabelled = len(list((data / "imagesTs").glob("*.nii.gz")))
    per_class = ", ".join(f"{n} {v:.3f}" for n, v in scores["dice"].items())
    hd95 = " / ".join(f"{v:.1f}" for v in scores["hd95"].values())
    return (
        f"trains a 2.5D U-Net for {DemoOptions().epochs} epochs on {labelled - held_out} of the "
        f"{labelled} embedded hippocampus cases, segments the {held_out} held-out cases and the "
        f"{unlabelled} unlabelled ones (NIfTI masks with the input's affine and header) with the "
        "model of the last epoch, so the held-out cases choose no checkpoint, and prints Dice, "
        f"HD95 and surface Dice per class. {demo_timing(demo_runs(root))}; mean foreground Dice "
        f"{scores['mean']['dice']:.3f} on the {held_out} held-out cases ({per_class}; HD95 "
        f"{hd95} mm), per case in [docs/results/demo/dice.csv](docs/results/demo/dice.csv)."
    )


def demo_page(root: Path) -> str:
    runs = demo_runs(root)
    lines = [
        "# Demo result (per case)",
        "",
        "<!-- generated by scripts/report.py from dice.csv and runs.csv -->",
        "",
        "`dice.csv` is what `medgraft demo` (seed 0, offline) writes: the held-out cases of the "
        "embedded data, segmented with the model of the last epoch (they chose no checkpoint), "
        f"mean foreground Dice {demo_scores(root)['mean']['dice']:.3f}. `runs.csv` holds every "
        "timed install and demo run (`scripts/time_command.py`):",
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
    path = root / RESULTS / "bench" / f"{name}.csv"
    return read_csv(path) if path.exists() else []


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


# -- putting it together --------------------------------------------------------------------------

README_BLOCKS: dict[str, Callable[[Path], str]] = {
    "demo": demo_readme,
    "accuracy": accuracy_readme,
    "study": study_readme,
    "bench-train": bench_train_readme,
    "bench-predict": bench_predict_readme,
}
BLOCK = re.compile(
    r"(<!-- report:(?P<name>[\w-]+) -->)(?P<body>.*?)(<!-- /report:(?P=name) -->)", re.S
)
"""A generated README block. A block whose opening marker ends its line holds Markdown blocks
(tables, lists) between marker lines; otherwise it is inline text inside a paragraph."""


def readme(root: Path) -> str:
    text = (root / "README.md").read_text()
    found = {m["name"] for m in BLOCK.finditer(text)}
    if found != set(README_BLOCKS):
        raise SystemExit(
            f"README.md: report blocks {sorted(found)}, expected {sorted(README_BLOCKS)}"
        )

    def fill(match: re.Match) -> str:
        body = README_BLOCKS[match["name"]](root)
        if match["body"].startswith("\n"):
            body = f"\n{body}\n"
        return match[1] + body + match[4]

    return BLOCK.sub(fill, text)


def generated(root: Path) -> dict[Path, str]:
    """Every generated text file, path → the content its sources give."""
    files = {
        root / "README.md": readme(root),
        root / RESULTS / "accuracy.md": accuracy_page(root),
        root / RESULTS / "demo" / "README.md": demo_page(root),
    }
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
    parser.add_argument("--root", type=Path, default=ROOT)
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


if __name__ == "__main__":
    main()
