"""5-fold cross-validation of the shipped recipes on the shared real data.

The code of ``scripts/accuracy_cv.py`` (``train``, ``report``, ``ablate``; its docstring says
what each step does), and what ``bench_gpu.py``, ``error_bands.py`` and the tests use of it:
what is particular to the shared datasets (their folders, options and goals) and to the
project's results files. Training and scoring are ``medgraft crossval``'s
(:mod:`medgraft.crossval`); the ablations are data (``ablations.yaml``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from medgraft import crossval
from medgraft.config.loading import options_sha256
from medgraft.config.resolve import run_folder
from medgraft.config.schema import PredictOptions
from medgraft.errors import MedgraftError
from medgraft.files import read_csv, write_csv
from medgraft.lab import CHECKOUT
from medgraft.lab.ablations import load_ablations
from medgraft.lab.shared_subsets import SHARED

FOLDS = 5
DATASETS = {
    # hippocampus_243's label holds one voxel of value -2: mapped to background (and logged)
    "hippocampus": {
        "recipe": "mri-2.5d",
        "goal": 0.89,
        "options": {"stray_labels_to_background": True},
    },
    # DRIVE as it ships: vessels in 1st_manual/, trained and scored inside the field of view
    "drive": {
        "recipe": "retina-2d",
        "goal": 0.82,
        "options": {"labels_dir": "1st_manual", "roi_dir": "mask"},
    },
    "kvasir": {"recipe": "rgb-2d", "goal": 0.90, "options": {}},
}
ABLATIONS = load_ablations({name: d["recipe"] for name, d in DATASETS.items()}, FOLDS)
"""The project's ablations, from ``ablations.yaml`` beside this module."""
ABLATION_COLUMNS = ["ablation", "change", "baseline"]
"""``baseline``: the ablation a change is paired with when it was measured against an earlier
recipe (empty: the recipe's CV)."""
CASE_COLUMNS = ["dataset", "recipe", "variant", *crossval.CASE_COLUMNS]
FOLD_COLUMNS = ["dataset", "recipe", *crossval.FOLD_COLUMNS]


def dataset_folder(name: str) -> Path:
    """The dataset folder medgraft trains on, as the shared data ship it."""
    return SHARED / {"hippocampus": "hippocampus", "kvasir": "kvasir-seg"}.get(
        name, "drive/training"
    )


def cv_plan(
    name: str,
    output: Path,
    change: dict | None = None,
    redo_changed: bool = False,
    data: Path | None = None,
    recipe: str | None = None,
) -> crossval.CrossvalPlan:
    """The dataset's recipe (or ``recipe``: an ablation of a whole design, such as a 3D model;
    with ``change``'s options, for an ablation) as a cross-validation of ``FOLDS`` folds into
    ``output``; ``data`` defaults to the shared copy."""
    flags = {"data": str(data or dataset_folder(name)), "offline": True}
    flags |= DATASETS[name]["options"] | (change or {})
    recipe = recipe or DATASETS[name]["recipe"]
    return crossval.CrossvalPlan(output, flags, recipe, folds=FOLDS, redo_changed=redo_changed)


def fold_runs(
    name: str,
    data: Path,
    output: Path,
    fold: int,
    change: dict | None = None,
    recipe: str | None = None,
) -> dict[Path, str]:
    """The run folders ``medgraft train`` writes for this fold (one, or one per view of a
    ``views`` recipe), each with the options fingerprint it will record."""
    configs = cv_plan(name, output, change, data=data, recipe=recipe).fold_configs()[fold]
    return {run_folder(config): options_sha256(config) for config in configs}


def train_folds(
    name: str,
    output: Path,
    folds: list[int],
    change: dict | None = None,
    redo_changed: bool = False,
    recipe: str | None = None,
) -> None:
    """Train the dataset's recipe (or ``recipe``; with ``change``'s options, for an ablation)
    on ``folds`` (``medgraft crossval``'s jobs); a call the lab timed for a whole ``views``
    fold and that was killed is counted first, in the fold's folder, as it was timed."""
    plan = cv_plan(name, output, change, redo_changed, recipe=recipe)
    for fold in folds:
        runs = fold_runs(name, dataset_folder(name), output, fold, change, recipe)
        timed = crossval.fold_folder(output, fold, list(runs))
        if timed not in runs:
            crossval.count_killed_call(timed, crossval.fold_fingerprint(runs))
    crossval.train_folds(plan, folds)


def evaluate_fold(
    name: str,
    output: Path,
    fold: int,
    variant: str,
    change: dict | None = None,
    predict: PredictOptions | None = None,
    recipe: str | None = None,
) -> list[dict]:
    """Per-case scores of the fold's validation cases (``medgraft crossval``'s), tagged with
    the dataset, recipe and ``variant``: ``recipe`` (the models' own prediction settings, or
    ``predict``) or ``raw`` (no clean-up)."""
    runs = cv_plan(name, output, change, recipe=recipe).fold_configs()[fold]
    if variant == "raw":
        predict = PredictOptions(largest_component=False, min_size=0)
    rows = crossval.score_fold(output, fold, runs, predict, variant)
    tag = {"dataset": name, "recipe": recipe or DATASETS[name]["recipe"], "variant": variant}
    return [tag | {k: row[k] for k in crossval.CASE_COLUMNS} for row in rows]


def fold_record(name: str, output: Path, fold: int, runs: list[Path]) -> dict:
    """How the fold was trained and timed (``medgraft crossval``'s ``folds.csv`` row), with
    the dataset and recipe; a fold whose training time was never recorded stops the report."""
    record = crossval.fold_record(output, fold, runs)
    if "seconds" not in record:
        sys.exit(f"{output / f'fold_{fold}'}: no training time recorded for these runs (wall.json)")
    return {"dataset": name, "recipe": DATASETS[name]["recipe"], **record}


def variants(name: str) -> list[str]:
    """``recipe`` (its TTA and clean-up), plus ``raw`` when the recipe cleans up, to show the
    clean-up's effect."""
    from medgraft.config.recipes import load_recipe
    from medgraft.config.schema import InferenceOptions

    inference = InferenceOptions(**load_recipe(DATASETS[name]["recipe"]).train.get("inference", {}))
    cleans = inference.largest_component or inference.min_size
    return ["recipe", "raw"] if cleans else ["recipe"]


def report(work: Path, results: Path, names: list[str], with_raw: bool = True) -> None:
    """Score the finished folds of ``names`` and write their rows into ``cases.csv`` and
    ``folds.csv`` under ``results`` (rows of other datasets are kept); ``scripts/report.py``
    derives every table from these two files. ``with_raw`` also scores the models without the
    recipe's clean-up (twice the prediction time)."""
    target = results / "accuracy"
    target.mkdir(parents=True, exist_ok=True)
    cases, folds = _kept_rows(target / "cases.csv", names), _kept_rows(target / "folds.csv", names)
    for name in names:
        output = work / name
        for fold, runs in cv_plan(name, output).fold_configs().items():
            if not crossval.fold_finished(runs):
                print(f"{name} fold {fold}: not finished, left out", flush=True)
                continue
            folds.append(fold_record(name, output, fold, [run_folder(c) for c in runs]))
            for variant in variants(name) if with_raw else ["recipe"]:
                cases.extend(evaluate_fold(name, output, fold, variant))
    write_csv(target / "cases.csv", cases, CASE_COLUMNS)
    write_csv(target / "folds.csv", folds, FOLD_COLUMNS)
    print(f"wrote {target / 'cases.csv'} and {target / 'folds.csv'}; now run scripts/report.py")


def ablate(work: Path, results: Path, names: list[str], redo_changed: bool = False) -> None:
    """Train and score each ablation (one change to a recipe, on its folds, the same split as
    the CV) and write its per-case rows to ``accuracy/ablations.csv``; ``report.py`` pairs them
    with the recipe's rows of the same folds and cases."""
    target = results / "accuracy"
    target.mkdir(parents=True, exist_ok=True)
    retired = [
        r["ablation"] for r in _kept_rows(target / "ablations.csv", list(ABLATIONS), "ablation")
    ]
    replaced = [*names, *retired]  # rows of ablations no longer listed go too
    cases = _kept_rows(target / "ablations.csv", replaced, key="ablation")
    folds = _kept_rows(target / "ablation_folds.csv", replaced, key="ablation")
    for ablation in names:
        setup = ABLATIONS[ablation]
        name, output = setup.dataset, work / "ablations" / ablation
        output.mkdir(parents=True, exist_ok=True)
        if not (output / "splits.json").exists():  # the CV's folds, so cases pair up
            shutil.copyfile(work / name / "splits.json", output / "splits.json")
        recipe = setup.recipe
        train_folds(name, output, setup.folds, setup.change, redo_changed, recipe)
        tag = {"ablation": ablation, "change": setup.summary, "baseline": setup.baseline}
        for fold in setup.folds:
            runs = list(fold_runs(name, dataset_folder(name), output, fold, setup.change, recipe))
            folds.append(tag | fold_record(name, output, fold, runs) | {"recipe": recipe})
            predict = setup.predict_options() if setup.predict else None
            rows = evaluate_fold(name, output, fold, "recipe", setup.change, predict, recipe)
            cases += [tag | row for row in rows]
    write_csv(target / "ablations.csv", cases, [*ABLATION_COLUMNS, *CASE_COLUMNS])
    write_csv(target / "ablation_folds.csv", folds, [*ABLATION_COLUMNS, *FOLD_COLUMNS])
    print(f"wrote {target / 'ablations.csv'}; now run scripts/report.py")


def _kept_rows(path: Path, replaced: list[str], key: str = "dataset") -> list[dict]:
    return [row for row in read_csv(path) if row[key] not in replaced]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["train", "report", "ablate"])
    parser.add_argument("--dataset", choices=sorted(DATASETS), action="append")
    parser.add_argument("--ablation", choices=sorted(ABLATIONS), action="append")
    parser.add_argument("--work", type=Path, default=Path("runs/accuracy"))
    parser.add_argument("--results", type=Path, default=Path("docs/results"))
    parser.add_argument(
        "--redo-changed", action="store_true", help="retrain folds whose recipe has changed"
    )
    parser.add_argument(
        "--no-raw", action="store_true", help="report: skip scoring without the clean-up"
    )
    args = parser.parse_args()
    os.chdir(CHECKOUT)
    try:
        if args.step == "train":
            for name in args.dataset or list(DATASETS):
                folds = list(range(FOLDS))
                train_folds(name, args.work / name, folds, redo_changed=args.redo_changed)
        elif args.step == "ablate":
            ablate(args.work, args.results, args.ablation or list(ABLATIONS), args.redo_changed)
        else:
            report(args.work, args.results, args.dataset or list(DATASETS), not args.no_raw)
    except MedgraftError as refused:  # a fold trained with other options: one line, no trace
        sys.exit(str(refused))
