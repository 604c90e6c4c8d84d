"""5-fold cross-validation of the shipped recipes on the shared real data (issue: accuracy).

Two steps, each resumable and safe to rerun:

    python scripts/accuracy_cv.py train --dataset hippocampus   # trains the folds not yet done
    python scripts/accuracy_cv.py report                        # predicts, scores, writes docs

``train`` runs ``medgraft train --recipe R --folds 5 --fold k`` through the CLI for every fold
without a finished run, and continues an interrupted one with ``--resume``; the wall time of
every call is added to ``<fold>/wall_seconds.json``. ``report`` segments each fold's validation
cases with ``medgraft predict`` (the recipe's TTA and post-processing, and once without
post-processing for comparison), scores them at the images' own resolution with medgraft's
evaluation (MONAI Dice and HD95), and writes ``docs/results/accuracy_tables.md`` and
``accuracy.csv`` (per fold and class), which ``docs/results/accuracy.md`` discusses.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from provenance import Measurement
from shared_subsets import SHARED

ROOT = Path(__file__).resolve().parents[1]
FOLDS = 5
DATASETS = {
    # hippocampus_243's label holds one voxel of value -2: mapped to background (and logged)
    "hippocampus": {"recipe": "mri-2.5d", "goal": 0.89, "flags": ["--stray-labels-to-background"]},
    "drive": {"recipe": "retina-2d", "goal": None, "flags": []},
    "kvasir": {"recipe": "rgb-2d", "goal": 0.90, "flags": []},
}
ANCHORS = {
    "hippocampus": "nnU-Net (Isensee et al. 2021, MSD): 0.90 anterior / 0.89 posterior",
    "kvasir": "U-Net 0.82, ResUNet++ 0.81, PraNet 0.90 mean Dice (as cited in the issue)",
    "drive": "U-Net F1 0.8142 (Alom et al. 2018, R2U-Net paper, DRIVE test set); "
    "published U-Net variants report 0.80-0.83",
}


def dataset_folder(name: str, work: Path) -> Path:
    """The dataset folder medgraft trains on; DRIVE gets a converted images/ + masks/ copy."""
    if name == "hippocampus":
        return SHARED / "hippocampus"
    if name == "kvasir":
        return SHARED / "kvasir-seg"
    return drive_folder(work / "data-drive")


def drive_folder(target: Path) -> Path:
    """DRIVE's training set as images/NN.tif (links) + masks/NN.png (the GIF vessel maps).

    medgraft matches images and masks by name and does not read GIF, so the manual vessel maps
    are re-saved losslessly as PNG under the image's case name. The licence stays in SHARED.
    """
    source = SHARED / "drive" / "training"
    (target / "images").mkdir(parents=True, exist_ok=True)
    (target / "masks").mkdir(parents=True, exist_ok=True)
    for image in sorted((source / "images").glob("*_training.tif")):
        case = image.name.split("_")[0]
        link = target / "images" / f"{case}.tif"
        if not link.exists():
            link.symlink_to(image)
        mask = target / "masks" / f"{case}.png"
        if not mask.exists():
            vessels = np.array(Image.open(source / "1st_manual" / f"{case}_manual1.gif"))
            Image.fromarray(((vessels > 127) * 255).astype(np.uint8)).save(mask)
    return target


def medgraft(*args: str) -> None:
    command = [sys.executable, "-m", "medgraft", *args]
    print("$ medgraft", " ".join(args), flush=True)
    subprocess.run(command, check=True)


def finished(run: Path, expected_sha256: str, redo_changed: bool) -> bool:
    """A fold is done when its metrics hold every epoch the saved config asks for, and it was
    trained with the options the recipe asks for now (a changed recipe is never reused
    silently: refused, or retrained with ``--redo-changed``)."""
    metrics, config = run / "metrics.csv", run / "config.json"
    if not (metrics.exists() and config.exists()):
        return False
    saved = json.loads(config.read_text())
    if saved.get("options_sha256") != expected_sha256:
        if not redo_changed:
            sys.exit(
                f"{run}: trained with other options than the recipe asks for now; pass "
                "--redo-changed to retrain it"
            )
        shutil.rmtree(run)
        return False
    with metrics.open() as handle:
        return len(list(csv.DictReader(handle))) >= saved["train_config"]["epochs"]


def expected_options(name: str, data: Path, output: Path, fold: int) -> str:
    """The options fingerprint ``medgraft train`` will record for this fold."""
    from medgraft.config.loading import options_sha256
    from medgraft.config.resolve import train_configs

    flags = {"data": str(data), "output": str(output), "folds": FOLDS, "offline": True}
    flags |= {f.removeprefix("--").replace("-", "_"): True for f in DATASETS[name]["flags"]}
    [config] = train_configs(flags, recipe=DATASETS[name]["recipe"], fold=str(fold))
    return options_sha256(config)


def train(name: str, work: Path, redo_changed: bool = False) -> None:
    setup = DATASETS[name]
    data = dataset_folder(name, work)
    output = work / name
    for fold in range(FOLDS):
        run = output / f"fold_{fold}"
        if finished(run, expected_options(name, data, output, fold), redo_changed):
            print(f"{run}: finished, skipped", flush=True)
            continue
        resume = ["--resume"] if (run / "last.pt").exists() else []
        with Measurement() as measured:
            medgraft(
                "train", "--recipe", setup["recipe"], "--data", str(data), "--output",
                str(output), "--folds", str(FOLDS), "--fold", str(fold), "--offline",
                *setup["flags"], *resume,
            )  # fmt: skip
        add_wall_time(run, measured)


def add_wall_time(run: Path, measured: Measurement) -> None:
    """Sum the fold's training calls (an interrupted fold takes several) in ``wall.json``;
    the other jobs' cores are averaged over the calls' wall time."""
    path = run / "wall.json"
    done = json.loads(path.read_text()) if path.exists() else {"seconds": 0.0, "calls": 0}
    other_core_seconds = done.get("other_jobs_cores", 0.0) * done["seconds"]
    seconds = done["seconds"] + measured.seconds
    record = {
        **measured.record(),
        "seconds": seconds,
        "calls": done["calls"] + 1,
        "other_jobs_cores": (other_core_seconds + measured.other_jobs_cores * measured.seconds)
        / seconds,
    }
    path.write_text(json.dumps(record, indent=1))


def fold_cases(output: Path, fold: int) -> list[str]:
    splits = json.loads((output / "splits.json").read_text())
    return splits["folds"][fold]["val"]


def evaluate_fold(name: str, work: Path, fold: int, variant: str) -> list[dict]:
    """Predict the fold's validation cases (``recipe`` defaults or ``raw``) and score them.

    The scores are kept in ``<fold>/scores-<variant>.json`` next to the model they belong to,
    so a rerun of ``report`` only scores folds that are new or retrained.
    """
    from medgraft.data.discovery import discover_dataset
    from medgraft.evaluation.evaluate import evaluate_folders

    output = work / name
    run = output / f"fold_{fold}"
    scores = run / f"scores-{variant}.json"
    if scores.exists() and scores.stat().st_mtime > (run / "best.pt").stat().st_mtime:
        return json.loads(scores.read_text())
    spec = discover_dataset(dataset_folder(name, work))
    cases = set(fold_cases(output, fold))
    records = [r for r in spec.training if r["case_id"] in cases]
    inputs = run / "val_images"
    inputs.mkdir(exist_ok=True)
    for record in records:
        link = inputs / Path(record["image"]).name
        if not link.exists():
            link.symlink_to(Path(record["image"]).resolve())
    predictions = run / f"predictions-{variant}"
    if predictions.exists() and predictions.stat().st_mtime < (run / "best.pt").stat().st_mtime:
        shutil.rmtree(predictions)  # masks of an earlier model of this fold: predict again
    options = ["--no-largest-component", "--min-size", "0"] if variant == "raw" else []
    medgraft("predict", "--model", str(run), "-i", str(inputs), "-o", str(predictions), *options)
    truth = Path(records[0]["label"]).parent
    evaluation = evaluate_folders(
        predictions,
        truth,
        spec.labels,
        cases=sorted(cases),
        stray_to_background="--stray-labels-to-background" in DATASETS[name]["flags"],
    )
    rows = []
    for class_name, dice in evaluation.summary()["dice"].items():
        hd95 = evaluation.summary()["hd95"][class_name]
        rows.append(
            {
                "dataset": name,
                "recipe": DATASETS[name]["recipe"],
                "variant": variant,
                "fold": fold,
                "class": class_name,
                "cases": len(cases),
                "dice": dice.mean,
                "hd95": hd95.mean,
                "per_case_dice": evaluation.values("dice", class_name),
            }
        )
    scores.write_text(json.dumps(rows, indent=1))
    return rows


def variants(name: str) -> list[str]:
    """``recipe`` (its TTA and clean-up), plus ``raw`` when the recipe cleans up, to show the
    clean-up's effect."""
    from medgraft.config.recipes import load_recipe
    from medgraft.config.schema import InferenceOptions

    inference = InferenceOptions(**load_recipe(DATASETS[name]["recipe"]).train.get("inference", {}))
    cleans = inference.largest_component or inference.min_size
    return ["recipe", "raw"] if cleans else ["recipe"]


def report(work: Path, results: Path) -> None:
    rows: list[dict] = []
    for name in DATASETS:
        output = work / name
        data = dataset_folder(name, work)
        done = [
            f
            for f in range(FOLDS)
            if finished(output / f"fold_{f}", expected_options(name, data, output, f), False)
        ]
        for fold in done:
            for variant in variants(name):
                rows.extend(evaluate_fold(name, work, fold, variant))
    results.mkdir(parents=True, exist_ok=True)
    with (results / "accuracy.csv").open("w", newline="") as handle:
        columns = ["dataset", "recipe", "variant", "fold", "class", "cases", "dice", "hd95"]
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (results / "accuracy_tables.md").write_text(summary_markdown(rows, work))
    print(f"wrote {results / 'accuracy.csv'} and {results / 'accuracy_tables.md'}")


def summary_markdown(rows: list[dict], work: Path) -> str:
    """Per dataset and variant: per-class Dice mean +- std over all validation cases of all
    folds, the spread of the fold means, HD95, and the measured training wall time."""
    lines = [
        "| dataset | recipe | predict | folds | class | Dice, all cases (mean ± std) "
        "| Dice, fold means (mean ± std) | HD95 (mean of folds) | goal |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, setup in DATASETS.items():
        for variant in variants(name):
            selected = [r for r in rows if r["dataset"] == name and r["variant"] == variant]
            if not selected:
                continue
            folds = sorted({r["fold"] for r in selected})
            classes = list(dict.fromkeys(r["class"] for r in selected))
            means = []
            for class_name in classes:
                per_class = [r for r in selected if r["class"] == class_name]
                cases = np.concatenate([r["per_case_dice"] for r in per_class]).astype(float)
                cases = cases[np.isfinite(cases)]
                fold_means = np.array([r["dice"] for r in per_class])
                hd95 = np.nanmean([r["hd95"] for r in per_class])
                means.append(cases.mean())
                lines.append(
                    f"| {name} | {setup['recipe']} | {variant} | {len(folds)} | {class_name} "
                    f"| {cases.mean():.3f} ± {cases.std():.3f} "
                    f"| {fold_means.mean():.3f} ± {fold_means.std():.3f} | {hd95:.2f} | |"
                )
            goal = setup["goal"]
            verdict = "-" if goal is None else (
                f"{'met' if np.mean(means) >= goal else 'missed by'} "
                f"{'' if np.mean(means) >= goal else f'{goal - np.mean(means):.3f} '}(≥ {goal})"
            )
            lines.append(
                f"| {name} | {setup['recipe']} | {variant} | {len(folds)} | **mean foreground** "
                f"| **{np.mean(means):.3f}** | | | {verdict} |"
            )
    lines += [
        "",
        "| dataset | folds trained | training wall time, all folds | median per fold | hardware |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in DATASETS:
        walls = [work / name / f"fold_{f}" / "wall_seconds.json" for f in range(FOLDS)]
        walls = [json.loads(p.read_text()) for p in walls if p.exists()]
        if walls:
            total = sum(w["seconds"] for w in walls)
            median = float(np.median([w["seconds"] for w in walls]))
            lines.append(
                f"| {name} | {len(walls)} | {total / 60:.1f} min | {median / 60:.1f} min "
                f"| {walls[0]['hardware']} |"
            )
    lines += ["", "Published anchors:", *[f"- {k}: {v}" for k, v in ANCHORS.items()], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["train", "report"])
    parser.add_argument("--dataset", choices=sorted(DATASETS), action="append")
    parser.add_argument("--work", type=Path, default=Path("runs/accuracy"))
    parser.add_argument("--results", type=Path, default=Path("docs/results"))
    parser.add_argument(
        "--redo-changed", action="store_true", help="retrain folds whose recipe has changed"
    )
    args = parser.parse_args()
    os.chdir(ROOT)
    if args.step == "train":
        for name in args.dataset or list(DATASETS):
            train(name, args.work, args.redo_changed)
    else:
        report(args.work, args.results)


if __name__ == "__main__":
    main()
