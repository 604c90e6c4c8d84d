"""What one CUDA GPU buys the hippocampus recipe: its CV fold 0 trained end to end, prediction
time, and the model's training speed under each precision.

    python scripts/bench_gpu.py [--work runs/gpu] [--results docs/results/bench] [--repeats 3]

Needs a CUDA GPU and the shared hippocampus data (``MEDGRAFT_SHARED_DATA`` names another copy).
Each part appends rows, with the machine, the versions and the load, to a CSV in ``--results``:

- ``gpu_fold.csv``: ``mri-2.5d`` trained on fold 0 of the accuracy CV (its three views in
  turn, as ``medgraft crossval`` trains them, with what a GPU user gets by default,
  ``--amp auto``: fp16; or the ``--amp`` given), its wall time and the real loop's slices/s
  (median over views and epochs after the first).
  ``gpu_fold_cases.csv`` holds the fold's 36 validation cases scored as ``accuracy_cv.py``
  scores them (last-epoch models, the recipe's clean-up), so ``report.py`` pairs them with the
  CPU CV's fold 0; ``same_split`` says whether the validation cases are the CPU fold's.
- ``gpu_predict.csv``: ``medgraft predict`` with the fold's three models on those 36 cases,
  ``--amp auto`` and ``off``, ``--repeats`` calls each (start-up and model loading included).
- ``gpu_train.csv``: the model alone (forward, backward and step on tensors already on the GPU),
  slices/s and peak GPU memory for fp32, fp16 and bf16 at the recipe's batch (32) and at 256.

``--part`` runs some parts alone (a second call after one was cut short).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from medgraft.crossval import fold_folder
from medgraft.files import append_csv, read_csv
from medgraft.lab import CHECKOUT
from medgraft.lab.accuracy_cv import DATASETS, evaluate_fold, fold_runs, train_folds
from medgraft.lab.bench import model_only
from medgraft.lab.shared_subsets import SHARED
from medgraft.provenance import Measurement
from medgraft.runtime import amp_dtype

DATASET = "hippocampus"
FOLD = 0
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
MODEL_ONLY_BATCHES = (32, 256)
GPU_OPTIONS = {"device": "cuda", "num_workers": 8}
"""What the fold adds to the recipe: the GPU, and DataLoader workers to feed it."""
DEFAULT_AMP = str(amp_dtype("auto", torch.device("cuda"))).removeprefix("torch.")


def fold_output(work: Path, amp: str) -> Path:
    return work / f"{DATASET}-amp-{amp}"


def fold_runs_on_gpu(work: Path, amp: str) -> list[Path]:
    """The fold's run folders, one per view."""
    options = GPU_OPTIONS | {"amp": amp}
    return list(fold_runs(DATASET, SHARED / "hippocampus", fold_output(work, amp), FOLD, options))


def model_speed(results: Path, repeats: int) -> None:
    path = results / "gpu_train.csv"
    for _ in range(repeats):
        for precision, dtype in PRECISIONS.items():
            for batch in MODEL_ONLY_BATCHES:
                torch.cuda.reset_peak_memory_stats()
                with Measurement() as measured:
                    speed = model_only(batch, 50, (64, 64), 3, dtype, device="cuda")
                peak = torch.cuda.max_memory_allocated() / 1024**3
                append_csv(path, [{
                    **measured.record(), "precision": precision, "batch_size": str(batch),
                    "image_size": "64x64", "steps": "50", "slices_per_s": f"{speed:.0f}",
                    "peak_gpu_memory_gib": f"{peak:.2f}",
                }])  # fmt: skip
                print(f"model alone, {precision}, batch {batch}: {speed:.0f} slices/s, "
                      f"peak {peak:.2f} GiB", flush=True)  # fmt: skip


def cpu_fold_cases() -> set[str]:
    """The validation cases of the CPU CV's fold, from the committed per-case scores."""
    return {
        row["case"]
        for row in read_csv(CHECKOUT / "docs/results/accuracy/cases.csv")
        if row["dataset"] == DATASET and row["variant"] == "recipe" and int(row["fold"]) == FOLD
    }


def train_fold(work: Path, results: Path, amp: str) -> None:
    """Train the fold, score its validation cases with the views' last-epoch models."""
    output, runs = fold_output(work, amp), fold_runs_on_gpu(work, amp)
    with Measurement() as measured:
        train_folds(DATASET, output, [FOLD], change=GPU_OPTIONS | {"amp": amp})
    rows = evaluate_fold(DATASET, output, FOLD, "recipe", GPU_OPTIONS | {"amp": amp})
    append_csv(results / "gpu_fold_cases.csv", rows)
    speeds = []
    for run in runs:
        epochs = read_csv(run / "metrics.csv")
        speeds += [float(r["samples_per_s"]) for r in epochs[1:] or epochs]  # after warm-up
    cases = {row["case"] for row in rows}
    by_class: dict[str, list[float]] = {}
    for row in rows:
        by_class.setdefault(row["class"], []).append(float(row["dice"]))
    means = {name: statistics.mean(values) for name, values in by_class.items()}
    append_csv(results / "gpu_fold.csv", [{
        **measured.record(), "recipe": DATASETS[DATASET]["recipe"], "fold": str(FOLD),
        "views": str(len(runs)), "amp": f"auto ({DEFAULT_AMP})" if amp == "auto" else amp,
        "num_workers": str(GPU_OPTIONS["num_workers"]), "cases": str(len(cases)),
        "same_split": "yes" if cases == cpu_fold_cases() else "no",
        "loop_slices_per_s": f"{statistics.median(speeds):.0f}",
        **{f"dice_{name}": f"{value:.4f}" for name, value in means.items()},
        "mean_dice": f"{statistics.mean(means.values()):.4f}",
    }])  # fmt: skip
    print(f"fold {FOLD}: {measured.seconds / 60:.1f} min, mean Dice "
          f"{statistics.mean(means.values()):.4f}, loop {statistics.median(speeds):.0f} "
          "slices/s", flush=True)  # fmt: skip


def predict_speed(work: Path, results: Path, repeats: int) -> None:
    path = results / "gpu_predict.csv"
    runs = fold_runs_on_gpu(work, "auto")
    inputs = fold_folder(fold_output(work, "auto"), FOLD, runs) / "val_images"
    cases = len(list(inputs.iterdir()))
    models = [flag for run in runs for flag in ("--model", str(run / "last.pt"))]
    for _ in range(repeats):
        for amp in ("auto", "off"):
            with tempfile.TemporaryDirectory() as masks, Measurement() as measured:
                subprocess.run(
                    [sys.executable, "-m", "medgraft", "predict", *models,
                     "-i", str(inputs), "-o", masks, "--amp", amp,
                     "--device", GPU_OPTIONS["device"]],
                    check=True,
                )  # fmt: skip
            append_csv(path, [{
                **measured.record(), "models": f"{len(runs)} (last.pt of each view)", "amp": amp,
                "cases": str(cases), "seconds_per_case": f"{measured.seconds / cases:.3f}",
            }])  # fmt: skip
            print(f"predict, amp {amp}: {measured.seconds:.1f} s for {cases} cases", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/gpu"))
    parser.add_argument("--results", type=Path, default=CHECKOUT / "docs/results/bench")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--amp", choices=["auto", "fp16", "bf16", "off"], default="auto",
        help="the fold's precision (prediction timing uses the auto fold's models)",
    )  # fmt: skip
    parser.add_argument(
        "--part", choices=["model", "fold", "predict"], action="append",
        help="parts to run (default: all, in this order)",
    )  # fmt: skip
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs a CUDA GPU")
    os.chdir(CHECKOUT)
    work, results = args.work.resolve(), args.results.resolve()
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    parts = args.part or ["model", "fold", "predict"]
    if "model" in parts:
        model_speed(results, args.repeats)
    if "fold" in parts:
        train_fold(work, results, args.amp)
    if "predict" in parts:
        predict_speed(work, results, args.repeats)


if __name__ == "__main__":
    main()
