"""5-fold cross-validation of the shipped recipes on the shared real data.

The code of ``scripts/accuracy_cv.py`` (``train``, ``report``, ``ablate``; its docstring says
what each step does), and what ``bench_gpu.py``, ``error_bands.py`` and the tests use of it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from medgraft.config.flags import as_flags
from medgraft.config.reuse import reuse_finished_run
from medgraft.errors import MedgraftError
from medgraft.evaluation.metrics import METRICS
from medgraft.files import read_csv, write_csv
from medgraft.lab import CHECKOUT
from medgraft.lab.provenance import SHARED_ABOVE, Heartbeat, Measurement, machine
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
ABLATIONS = {
    # one change to a shipped recipe each, trained and scored on the CV's folds named here;
    # the hippocampus changes are made to the axial model alone (`views: axial`), the recipe
    # they were measured on, and paired with it (`baseline`)
    "per-sample-dice": {
        "dataset": "hippocampus",
        "folds": [0, 1],
        "change": {"views": "axial", "loss": "dice_ce"},
        "baseline": "axial-only",
        "summary": "soft Dice per sample (`--loss dice_ce`, the default before)",
    },
    # the recipe's size until this round: its rows are the earlier CV of the same split
    "drive-576": {
        "dataset": "drive",
        "folds": [0, 1, 2, 3, 4],
        "change": {"image_size": 576},
        "summary": "576 px instead of 768, the size before (`--image-size 576`)",
    },
    # the size before that, measured while the recipe trained 12 epochs: its runs are an
    # earlier CV of the same split, paired with the 12-epoch CV below
    "drive-384": {
        "dataset": "drive",
        "folds": [0, 1, 2, 3, 4],
        "change": {"image_size": 384, "epochs": 12},
        "baseline": "drive-12-epochs",
        "summary": "384 px instead of 576, the size before (`--image-size 384`)",
    },
    # DRIVE's errors lie at the vessel border (error bands): a finer grid than the native
    # 565 x 584, first measured at the 12 epochs of drive-384 so it pairs with the same runs
    "drive-768": {
        "dataset": "drive",
        "folds": [0, 1],
        "change": {"image_size": 768, "epochs": 12},
        "baseline": "drive-12-epochs",
        "summary": "768 px instead of 576 (`--image-size 768`)",
    },
    # more updates for the same compute: 384 px crops of the 768 px image, four times as many
    # per epoch (the same pixels), so four times the optimiser steps; DRIVE's published
    # models train on patches, and 12 -> 24 epochs (twice the steps) bought 0.010
    "drive-patches-384": {
        "dataset": "drive",
        "folds": [0, 1],
        "change": {"patch_size": 384, "samples_per_epoch": 128},
        "summary": "384 px crops, 128 per epoch instead of 32 whole 768 px images "
        "(`--patch-size 384 --samples-per-epoch 128`)",
    },
    # the recipe's epochs before 24 (then at 576 px): its rows are an earlier CV of the split
    "drive-12-epochs": {
        "dataset": "drive",
        "folds": [0, 1, 2, 3, 4],
        "change": {"image_size": 576, "epochs": 12},
        "baseline": "drive-576",
        "summary": "12 epochs instead of 24, the schedule before (`--epochs 12`)",
    },
    # the recipe trains three views; its axial model alone is the recipe before (and the
    # baseline the hippocampus changes below were measured against: same runs, same folds)
    "axial-only": {
        "dataset": "hippocampus",
        "folds": [0, 1, 2, 3, 4],
        "change": {"views": "axial"},
        "summary": "the axial model alone, the recipe before (`--views axial`)",
    },
    "coronal": {
        "dataset": "hippocampus",
        "folds": [0, 1, 2, 3, 4],
        "change": {"views": "coronal"},
        "baseline": "axial-only",
        "summary": "the coronal model alone instead of the axial one (`--views coronal`)",
    },
    "sagittal": {
        "dataset": "hippocampus",
        "folds": [0, 1, 2, 3, 4],
        "change": {"views": "sagittal"},
        "baseline": "axial-only",
        "summary": "the sagittal model alone instead of the axial one (`--views sagittal`)",
    },
    "slices-5": {
        "dataset": "hippocampus",
        "folds": [0],
        "change": {"views": "axial", "slices": 5},
        "baseline": "axial-only",
        "summary": "k = 5 adjacent slices instead of 3 (`--slices 5`, stem re-patched)",
    },
    "flips": {
        "dataset": "hippocampus",
        "folds": [0],
        "change": {"views": "axial", "augment": {"flips": True}},
        "baseline": "axial-only",
        "predict": ["--tta"],  # the recipe's prediction defaults leave TTA off
        "summary": "in-plane flips in training and mirroring TTA, as nnU-Net (`--flips`, "
        "predict `--tta`)",
    },
    # with the fix every sample draws its own augmentation, so the recipe's half strength
    # (set while all samples shared one draw) is measured again against full strength
    "full-strength": {
        "dataset": "hippocampus",
        "folds": [0],
        "change": {"views": "axial", "augment": {"strength": 1.0}},
        "baseline": "axial-only",
        "summary": "augmentation at full strength instead of half (`--augment-strength 1`)",
    },
    # full strength on the axial model alone was ahead on fold 0 (+0.003); on an Intel Xeon a
    # view trains in about 11 minutes, so the three views at full strength fit the hour (first
    # measured on folds 0-1, then on all five: not distinguishable, not adopted)
    "full-strength-3-views": {
        "dataset": "hippocampus",
        "folds": [0, 1, 2, 3, 4],
        "change": {"augment": {"strength": 1.0}},
        "summary": "augmentation at full strength instead of half, all three views "
        "(`--augment-strength 1`)",
    },
    # nnU-Net's deep supervision: the three decoder stages above the output (32, 16 and 8 px
    # for the 64 px slices) each get a 1x1 head and a loss of their own
    "deep-supervision": {
        "dataset": "hippocampus",
        "folds": [0, 1],
        "change": {"views": "axial", "deep_supervision": 3},
        "baseline": "axial-only",
        "summary": "deep supervision over 3 decoder stages, as nnU-Net (`--deep-supervision 3`)",
    },
    "lite1": {
        "dataset": "hippocampus",
        "folds": [0],
        "change": {"views": "axial", "encoder": "tu-tf_efficientnet_lite1"},
        "baseline": "axial-only",
        "summary": "EfficientNet-Lite1 instead of Lite0 (`--encoder tu-tf_efficientnet_lite1`)",
    },
    # the same discriminative fine-tuning on the axial model: the A/P cut is anatomical
    # context the ImageNet features may keep better when adapted slowly
    "encoder-lr-0.1": {
        "dataset": "hippocampus",
        "folds": [0, 1],
        "change": {"views": "axial", "encoder_lr_mult": 0.1},
        "baseline": "axial-only",
        "summary": "encoder learning rate a tenth of the decoder's (`--encoder-lr-mult 0.1`)",
    },
    # the recipe's encoder until this round: its rows are the earlier CV of the same split
    "kvasir-lite0": {
        "dataset": "kvasir",
        "folds": [0, 1, 2, 3, 4],
        "change": {"encoder": "tu-tf_efficientnet_lite0"},
        "summary": "EfficientNet-Lite0 instead of Lite2, the encoder before "
        "(`--encoder tu-tf_efficientnet_lite0`)",
    },
    # the recipe's epochs before 15 (then with Lite0): its rows are an earlier CV of the split
    "kvasir-5-epochs": {
        "dataset": "kvasir",
        "folds": [0, 1, 2, 3, 4],
        "change": {"encoder": "tu-tf_efficientnet_lite0", "epochs": 5},
        "baseline": "kvasir-lite0",
        "summary": "5 epochs instead of 15, the schedule before (`--epochs 5`)",
    },
    # far errors (polyps missed or invented) dominate Kvasir's: does a finer grid help Lite2?
    "kvasir-320-lite2": {
        "dataset": "kvasir",
        "folds": [0],
        "change": {"image_size": 320},
        "summary": "320 px instead of 160 (`--image-size 320`)",
    },
    # the 15-epoch curve still rose in its last epochs, and 5 -> 15 epochs bought 0.021 (Lite0)
    "kvasir-30-epochs": {
        "dataset": "kvasir",
        "folds": [0],
        "change": {"epochs": 30},
        "summary": "30 epochs instead of 15 (`--epochs 30`)",
    },
    # Kvasir's errors are far ones (polyps missed or invented); stronger augmentation (scale,
    # rotation, intensity) as a regulariser, as DRIVE's recipe trains at 1.5
    "kvasir-strength-1.5": {
        "dataset": "kvasir",
        "folds": [0],
        "change": {"augment": {"strength": 1.5}},
        "summary": "augmentation at strength 1.5 instead of 1 (`--augment-strength 1.5`)",
    },
    # discriminative fine-tuning: the pretrained encoder learns at a tenth of the decoder's
    # rate, so the ImageNet features that recognise objects (Kvasir's errors are polyps
    # missed or invented) are adapted rather than overwritten
    "kvasir-encoder-lr-0.1": {
        "dataset": "kvasir",
        "folds": [0],
        "change": {"encoder_lr_mult": 0.1},
        "summary": "encoder learning rate a tenth of the decoder's (`--encoder-lr-mult 0.1`)",
    },
    # 3D designs (recipe mri-3d) against the three 2.5D views on the same cases; the scratch
    # twin, paired with the ImageNet-initialised ACS model, is the transfer claim in 3D
    "3d-acs": {
        "dataset": "hippocampus",
        "recipe": "mri-3d",
        "folds": [0],
        "change": {},
        "summary": "a 3D U-Net, the ImageNet encoder carried into 3D by ACS (`--recipe mri-3d`), "
        "instead of the three 2.5D views",
    },
    "3d-inflate": {
        "dataset": "hippocampus",
        "recipe": "mri-3d",
        "folds": [0],
        "change": {"conversion": "inflate"},
        "summary": "a 3D U-Net, the ImageNet encoder inflated into 3D (`--recipe mri-3d "
        "--conversion inflate`), instead of the three 2.5D views",
    },
    "3d-acs-scratch": {
        "dataset": "hippocampus",
        "recipe": "mri-3d",
        "folds": [0],
        "change": {"weights": "none"},
        "baseline": "3d-acs",
        "summary": "the 3D ACS U-Net from random weights (`--recipe mri-3d --weights none`)",
    },
    # measured while the recipe used Lite0, so it pairs with those runs
    "kvasir-320": {
        "dataset": "kvasir",
        "folds": [0],
        "change": {"encoder": "tu-tf_efficientnet_lite0", "image_size": 320},
        "baseline": "kvasir-lite0",
        "summary": "320 px instead of 160 (`--image-size 320`)",
    },
}
ABLATION_COLUMNS = ["ablation", "change", "baseline"]
"""``baseline``: the ablation a change is paired with when it was measured against an earlier
recipe (empty: the recipe's CV)."""


HEARTBEAT = "wall.running.json"
"""A training call's time so far, rewritten every 30 s; left behind only by a killed call."""


def dataset_folder(name: str) -> Path:
    """The dataset folder medgraft trains on, as the shared data ship it."""
    return SHARED / {"hippocampus": "hippocampus", "kvasir": "kvasir-seg"}.get(
        name, "drive/training"
    )


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
    trained_with = saved.get("options_sha256")
    if not reuse_finished_run(
        run, trained_with, expected_sha256, redo_changed=redo_changed, asked_by="the recipe"
    ):
        shutil.rmtree(run)
        return False
    return len(read_csv(metrics)) >= saved["train_config"]["epochs"]


def fold_runs(
    name: str,
    data: Path,
    output: Path,
    fold: int,
    change: dict | None = None,
    on_cuda: Callable[[str], bool] | None = None,
    recipe: str | None = None,
) -> dict[Path, str]:
    """The run folders ``medgraft train`` writes for this fold (one, or one per view of a
    ``views`` recipe), each with the options fingerprint it will record: with the recipe's
    cuda profile where ``on_cuda`` says the device is a CUDA GPU (as ``medgraft train`` does,
    ``runtime.is_cuda``); without it, the recipe as the CPU trains it. ``recipe``: another
    than the dataset's (an ablation of a whole design, such as a 3D model)."""
    from medgraft.config.loading import options_sha256
    from medgraft.config.resolve import run_folder, train_configs

    flags = {"data": str(data), "output": str(output), "folds": FOLDS, "offline": True}
    configs = train_configs(
        flags | DATASETS[name]["options"] | (change or {}),
        recipe=recipe or DATASETS[name]["recipe"],
        fold=str(fold),
        on_cuda=on_cuda,
    )
    return {run_folder(config): options_sha256(config) for config in configs}


def fold_finished(runs: dict[Path, str], redo_changed: bool) -> bool:
    return all([finished(run, sha256, redo_changed) for run, sha256 in runs.items()])


def train_folds(
    name: str,
    output: Path,
    folds: list[int],
    change: dict | None = None,
    redo_changed: bool = False,
    recipe: str | None = None,
) -> None:
    """Train the dataset's recipe (or ``recipe``; with ``change``'s options, for an ablation)
    on ``folds`` through ``medgraft train`` (on a CUDA device, under the recipe's cuda
    profile)."""
    from medgraft.runtime import is_cuda

    setup = DATASETS[name]
    recipe = recipe or setup["recipe"]
    data = dataset_folder(name)
    options = setup["options"] | (change or {})
    for fold in folds:
        runs = fold_runs(name, data, output, fold, change, on_cuda=is_cuda, recipe=recipe)
        timed, fingerprint = fold_folder(output, fold, list(runs)), fold_fingerprint(runs)
        count_killed_call(timed, fingerprint)  # first: a call killed after its last epoch too
        if fold_finished(runs, redo_changed):
            print(f"{timed}: finished, skipped", flush=True)
            continue
        for run in runs:  # each view's run folder: the CV's split, so the cases pair up
            split = run.parent / "splits.json"
            if run.parent != output and not split.exists() and (output / "splits.json").exists():
                split.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(output / "splits.json", split)
        resume = ["--resume"] if any((run / "last.pt").exists() for run in runs) else []
        timed.mkdir(parents=True, exist_ok=True)
        beat = {"options_sha256": fingerprint}
        with Measurement() as measured, Heartbeat(measured, timed / HEARTBEAT, extra=beat):
            medgraft(
                "train", "--recipe", recipe, "--data", str(data), "--output",
                str(output), "--folds", str(FOLDS), "--fold", str(fold), "--offline",
                *as_flags(options), *resume,
            )  # fmt: skip
        add_wall_time(timed, fingerprint, measured.seconds, measured.other_jobs_cores)
        split = next(iter(runs)).parent / "splits.json"
        if not (output / "splits.json").exists():  # a views recipe splits in its view folders
            shutil.copyfile(split, output / "splits.json")


def fold_folder(output: Path, fold: int, runs: list[Path]) -> Path:
    """Where a fold's training time, predictions and scores are kept: its run folder, or for
    a ``views`` recipe a folder beside the views' (not ``fold_k``, so ``medgraft predict
    --model <output>`` still finds only the views)."""
    single = output / f"fold_{fold}"
    return single if runs == [single] else output / f"views_fold_{fold}"


def fold_fingerprint(runs: dict[Path, str]) -> str:
    return "+".join(sorted(runs.values()))


def count_killed_call(fold: Path, fingerprint: str) -> None:
    """Add a killed call's time, from the heartbeat it left, to the fold's ``wall.json``;
    a heartbeat of other options (a recipe since changed) is dropped."""
    heartbeat = fold / HEARTBEAT
    if heartbeat.exists():
        spent = json.loads(heartbeat.read_text())
        if spent.get("options_sha256") == fingerprint:
            add_wall_time(
                fold, fingerprint, spent["seconds"], spent["other_jobs_cores"], killed=True
            )
        heartbeat.unlink()


def add_wall_time(
    fold: Path, fingerprint: str, seconds: float, other_jobs_cores: float, killed: bool = False
) -> None:
    """Sum the fold's training calls (an interrupted fold takes several) in ``wall.json``;
    the other jobs' cores are averaged over the calls' wall time. A ``killed`` call counts
    up to its last heartbeat (at most 30 s short); the machine and versions are those of the
    call that finished the fold. Times of runs with another fingerprint (a recipe since
    changed, retrained in new run folders) start anew."""
    path = fold / "wall.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    if done and _timed_fingerprint(fold, done) != fingerprint:
        done = {}
    done = {"seconds": 0.0, "calls": 0, **done}
    other_core_seconds = done.get("other_jobs_cores", 0.0) * done["seconds"]
    total = done["seconds"] + seconds
    record = {
        **machine(),
        "options_sha256": fingerprint,
        "seconds": total,
        "calls": done["calls"] + 1,
        "killed_calls": done.get("killed_calls", 0) + killed,
        "other_jobs_cores": (other_core_seconds + other_jobs_cores * seconds) / total,
    }
    path.write_text(json.dumps(record, indent=1))


def _timed_fingerprint(fold: Path, wall: dict) -> str:
    """The options the times in ``wall`` were spent on; files written before they said so
    belong to the single run in the fold's folder."""
    if "options_sha256" in wall:
        return wall["options_sha256"]
    config = fold / "config.json"
    return json.loads(config.read_text())["options_sha256"] if config.exists() else ""


def fold_cases(output: Path, fold: int) -> list[str]:
    splits = json.loads((output / "splits.json").read_text())
    return splits["folds"][fold]["val"]


CASE_COLUMNS = ["dataset", "recipe", "variant", "fold", "case", "class", *METRICS.names()]
FOLD_COLUMNS = [
    "dataset", "recipe", "fold", "cases", "epochs", "checkpoint", "options_sha256", "seconds",
    "calls", "other_jobs_cores", "shared", "cpu", "cores", "gpu", "python", "torch", "medgraft",
    "commit", "date",
]  # fmt: skip


def evaluate_fold(
    name: str,
    output: Path,
    fold: int,
    variant: str,
    models: list[Path],
    predict_flags: tuple[str, ...] = (),
    folder: Path | None = None,
) -> list[dict]:
    """Per-case scores of the fold's validation cases, segmented by ``models`` (the fold's
    **last-epoch** models, ``last.pt``: those cases choose no checkpoint) with
    ``medgraft predict`` (``recipe`` defaults or ``raw``: no clean-up; ``predict_flags`` added)
    and scored at the images' own resolution.

    The rows are kept in ``<folder>/cases-<variant>.json`` (``folder``: the fold's, see
    :func:`fold_folder`) with the list of models that gave them, so a rerun of ``report`` only
    scores folds that are new, retrained or scored by other models.
    """
    from medgraft.data.discovery import discover_dataset
    from medgraft.evaluation.evaluate import evaluate_folders

    run = folder or output / f"fold_{fold}"
    run.mkdir(parents=True, exist_ok=True)
    scores, scored_by = run / f"cases-{variant}.json", run / f"cases-{variant}.models.json"
    newest_model = max(model.stat().st_mtime for model in models)
    # scores written before the list was kept are trusted on their time alone
    before = json.loads(scored_by.read_text()) if scored_by.exists() else None
    if (
        scores.exists()
        and scores.stat().st_mtime > newest_model
        and before in (None, [str(model) for model in models])
    ):
        return json.loads(scores.read_text())
    options = DATASETS[name]["options"]
    spec = discover_dataset(dataset_folder(name), options.get("labels_dir"), options.get("roi_dir"))
    cases = set(fold_cases(output, fold))
    records = [r for r in spec.training if r.case_id in cases]
    inputs = run / "val_images"
    inputs.mkdir(exist_ok=True)
    for channel in (path for record in records for path in record.channels):
        link = inputs / channel.name  # every channel file: predict finds _0001 … beside _0000
        if not link.exists():
            link.symlink_to(channel.resolve())
    predictions = run / f"predictions-{variant}"
    if predictions.exists():
        shutil.rmtree(predictions)  # masks of an earlier model of this fold: predict again
    options = ["--no-largest-component", "--min-size", "0"] if variant == "raw" else []
    model_flags = [flag for model in models for flag in ("--model", str(model))]
    medgraft(
        "predict", *model_flags, "-i", str(inputs), "-o", str(predictions), *options,
        *predict_flags,
    )  # fmt: skip
    evaluation = evaluate_folders(
        predictions,
        Path(records[0].label).parent,
        spec.labels,
        cases=sorted(cases),
        stray_to_background=DATASETS[name]["options"].get("stray_labels_to_background", False),
        roi_mask=dataset_folder(name) / DATASETS[name]["options"]["roi_dir"]
        if "roi_dir" in DATASETS[name]["options"]
        else None,
    )
    rows = [
        {
            "dataset": name,
            "recipe": DATASETS[name]["recipe"],
            "variant": variant,
            "fold": fold,
            "case": row["case_id"],
            "class": class_name,
            **{metric: f"{row[f'{metric}_{class_name}']:.5f}" for metric in METRICS},
        }
        for row in evaluation.rows
        for class_name in evaluation.label_names.values()
    ]
    scores.write_text(json.dumps(rows, indent=1))
    scored_by.write_text(json.dumps([str(model) for model in models]))
    return rows


def fold_record(name: str, output: Path, fold: int, runs: list[Path]) -> dict:
    """How the fold was trained and timed: its options fingerprints (one per run folder, a
    view each for a ``views`` recipe, joined by ``+``), wall time, machine."""
    config = json.loads((runs[0] / "config.json").read_text())
    fingerprints = {
        run: json.loads((run / "config.json").read_text())["options_sha256"] for run in runs
    }
    wall = fold_wall_time(fold_folder(output, fold, runs), fingerprints)
    return {
        **wall,
        "dataset": name,
        "recipe": DATASETS[name]["recipe"],
        "fold": fold,
        "cases": len(fold_cases(output, fold)),
        "epochs": config["train_config"]["epochs"],
        "checkpoint": "last.pt",
        "options_sha256": "+".join(fingerprints.values()),
        "seconds": f"{wall['seconds']:.1f}",
        "other_jobs_cores": f"{wall['other_jobs_cores']:.2f}",
        "shared": "yes" if wall["other_jobs_cores"] > SHARED_ABOVE else "no",
    }


def fold_wall_time(fold: Path, runs: dict[Path, str]) -> dict:
    """The time the fold's runs took: the calls timed in the fold's folder, plus that of each
    run trained before on its own (a view's run reused from an ablation, say) from the
    ``wall.json`` in its own folder; times spent on other options are left out, and the other
    jobs' cores are averaged over the total."""
    timed = {fold: fold_fingerprint(runs)} | {run: sha for run, sha in runs.items() if run != fold}
    walls = []
    for folder, fingerprint in timed.items():
        path = folder / "wall.json"
        wall = json.loads(path.read_text()) if path.exists() else {}
        if wall and _timed_fingerprint(folder, wall) == fingerprint:
            walls.append(wall)
    if not walls:
        sys.exit(f"{fold}: no training time recorded for these runs (wall.json)")
    seconds = sum(w["seconds"] for w in walls)
    return {
        **walls[-1],
        "seconds": seconds,
        "calls": sum(w["calls"] for w in walls),
        "other_jobs_cores": sum(w["other_jobs_cores"] * w["seconds"] for w in walls) / seconds,
    }


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
        data = dataset_folder(name)
        for fold in range(FOLDS):
            runs = fold_runs(name, data, output, fold)
            if not fold_finished(runs, False):
                print(f"{name} fold {fold}: not finished, left out", flush=True)
                continue
            folds.append(fold_record(name, output, fold, list(runs)))
            models, folder = (
                [run / "last.pt" for run in runs],
                fold_folder(output, fold, list(runs)),
            )
            for variant in variants(name) if with_raw else ["recipe"]:
                cases.extend(evaluate_fold(name, output, fold, variant, models, folder=folder))
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
        name, output = setup["dataset"], work / "ablations" / ablation
        output.mkdir(parents=True, exist_ok=True)
        if not (output / "splits.json").exists():  # the CV's folds, so cases pair up
            shutil.copyfile(work / name / "splits.json", output / "splits.json")
        recipe = setup.get("recipe")
        train_folds(name, output, setup["folds"], setup["change"], redo_changed, recipe)
        data = dataset_folder(name)
        for fold in setup["folds"]:
            tag = {
                "ablation": ablation,
                "change": setup["summary"],
                "baseline": setup.get("baseline", ""),
            }
            runs = list(fold_runs(name, data, output, fold, setup["change"], recipe=recipe))
            own = {"recipe": recipe} if recipe else {}
            folds.append(tag | fold_record(name, output, fold, runs) | own)
            models = [run / "last.pt" for run in runs]
            flags = tuple(setup.get("predict", ()))
            folder = fold_folder(output, fold, runs)
            rows = evaluate_fold(name, output, fold, "recipe", models, flags, folder)
            cases += [tag | row | own for row in rows]
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
