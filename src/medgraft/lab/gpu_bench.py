"""What one CUDA GPU buys the shipped recipes: the code of ``scripts/bench_gpu.py`` (its docstring
says how to run it and what each part writes).

Each fold trains through ``medgraft train --device cuda`` as a GPU user's would, so the
recipe's ``cuda`` profile applies; it is scored on the fold's validation cases exactly as the CPU
CV scores its folds (``accuracy_cv.evaluate_fold``: last-epoch models, the recipe's prediction
defaults, the images' own resolution). ``--tiny`` runs every part on the CPU with a few steps
and the smallest sizes, into ``<work>/results``, to check the plumbing in a minute; its numbers
mean nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from medgraft.crossval import fold_folder
from medgraft.errors import MedgraftError
from medgraft.files import append_csv, read_csv
from medgraft.lab import CHECKOUT
from medgraft.lab.accuracy_cv import (
    CASE_COLUMNS,
    DATASETS,
    dataset_folder,
    evaluate_fold,
    fold_runs,
    train_folds,
)
from medgraft.provenance import Measurement

FOLD = 0
PARTS = ("profile-speed", "folds", "model", "predict")
DEFAULT_PARTS = ("profile-speed", "folds")
"""What one call runs unless ``--part`` says: under 8 minutes on one H100 by the profiles' own
estimates (about 1 minute of model-alone steps, 2 + 1.5 + 2.5 minutes of folds, and their
scoring). ``model`` (the 64x64 table measured before the profiles, which ``profile-speed``'s
hippocampus rows now cover at the profile's batch) and ``predict`` are asked for by name."""
FOLD_ORDER = ("kvasir", "drive", "hippocampus")
"""The folds in the order they train: the new 2D profiles first."""
MODEL_ONLY_BATCHES = (32, 256)
PRECISIONS = ("fp32", "fp16", "bf16")
TINY_CHANGE = {"epochs": 1, "samples_per_epoch": 4, "batch_size": 2, "num_workers": 0}
TINY_2D = {"image_size": 64}
"""``--tiny``: what every fold trains with on the CPU (2D images also smaller; the volume
recipe's axial view alone)."""


@dataclass(frozen=True)
class Bench:
    """One call's settings."""

    work: Path
    results: Path
    device: str
    amp: str | None
    repeats: int
    tiny: bool

    def fold_change(self, name: str) -> dict:
        """The options the fold adds to its recipe: the device (and ``--amp`` when given);
        with ``--tiny``, the smallest run that goes through every step."""
        change = {"device": self.device} | ({"amp": self.amp} if self.amp else {})
        if self.tiny:
            change |= TINY_CHANGE | ({"views": "axial"} if name == "hippocampus" else TINY_2D)
        return change

    def fold_output(self, name: str) -> Path:
        return self.work / f"{name}-cuda"


def cuda_device_name() -> str:
    import torch

    return torch.cuda.get_device_name()


def model_speed(bench: Bench) -> None:
    """The model alone at 64x64 (the hippocampus slices) for each precision at batch 32 and 256:
    ``gpu_train.csv``, the table measured before the cuda profiles."""
    steps, batches = (2, (2,)) if bench.tiny else (50, MODEL_ONLY_BATCHES)
    for _ in range(bench.repeats):
        for precision in ("fp32",) if bench.tiny else PRECISIONS:
            for batch in batches:
                step = {"batch_size": batch, "side": 64, "classes": 3, "encoder": None}
                peak, speed, measured = timed_steps(bench, step, steps, precision, None)
                append_csv(bench.results / "gpu_train.csv", [{
                    **measured.record(), "precision": precision, "batch_size": str(batch),
                    "image_size": "64x64", "steps": str(steps), "slices_per_s": f"{speed:.0f}",
                    "peak_gpu_memory_gib": f"{peak:.2f}",
                }])  # fmt: skip
                print(f"model alone, {precision}, batch {batch}: {speed:.0f} slices/s", flush=True)


def timed_steps(
    bench: Bench, step: dict, steps: int, precision: str, channels_last: bool | None
) -> tuple[float, float, Measurement]:
    """``steps`` training steps of the model alone (``step``: batch size, square side, classes,
    encoder or None for the default): peak GPU memory (GiB, 0 on the CPU), samples/s, and
    their measurement."""
    import torch

    from medgraft.lab.bench import model_only
    from medgraft.models.registry import DEFAULT_ENCODER

    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    cuda = bench.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with Measurement() as measured:
        speed = model_only(
            step["batch_size"], steps, (step["side"], step["side"]), step["classes"], dtype,
            device=bench.device, encoder=step["encoder"] or DEFAULT_ENCODER,
            channels_last=channels_last,
        )  # fmt: skip
    peak = torch.cuda.max_memory_allocated() / 1024**3 if cuda else 0.0
    return peak, speed, measured


CLASSES = {"hippocampus": 3, "kvasir": 2, "drive": 2}
"""Output classes of each dataset's model (background included)."""


def profile_shapes(tiny: bool) -> list[dict]:
    """Each cuda profile's training step: encoder, input size (the hippocampus slices at
    64x64, as the table before; 2D images at the profile's size or patch) and batch."""
    from medgraft.config.loading import resolve_options
    from medgraft.config.recipes import load_recipe
    from medgraft.config.schema import TrainConfig

    shapes = []
    for name, setup in DATASETS.items():
        recipe = load_recipe(setup["recipe"])
        where = {"data": "-", "output": "-"}
        config = TrainConfig(**resolve_options([recipe.train, recipe.cuda, where]))
        side = 64 if name == "hippocampus" else config.patch_size or config.image_size
        shapes.append({
            "recipe": recipe.name, "encoder": config.encoder, "classes": CLASSES[name],
            "side": 32 if tiny else side, "batch_size": 2 if tiny else config.batch_size,
        })  # fmt: skip
    return shapes


def profile_speed(bench: Bench) -> None:
    """The model alone at each cuda profile's shape, per precision, with and without
    channels_last: ``gpu_profile_speed.csv`` (what the profiles' precision is to be chosen by)."""
    steps = 2 if bench.tiny else 30
    for _ in range(bench.repeats):
        for shape in profile_shapes(bench.tiny):
            for precision in ("fp32",) if bench.tiny else PRECISIONS:
                for channels_last in (False, True):
                    peak, speed, measured = timed_steps(
                        bench, shape, steps, precision, channels_last
                    )
                    append_csv(bench.results / "gpu_profile_speed.csv", [{
                        **measured.record(), **shape, "precision": precision,
                        "channels_last": "on" if channels_last else "off", "steps": str(steps),
                        "samples_per_s": f"{speed:.1f}", "peak_gpu_memory_gib": f"{peak:.2f}",
                    }])  # fmt: skip
                    print(f"{shape['recipe']} step, {precision}, channels_last "
                          f"{channels_last}: {speed:.0f} samples/s", flush=True)  # fmt: skip


FOLD_FIELDS = ("recipe_profile", "epochs", "batch_size", "samples_per_epoch", "val_every",
               "image_size", "patch_size", "num_workers", "amp", "channels_last")  # fmt: skip
"""The trained options a fold's row repeats from its ``config.json``."""


def train_and_score(bench: Bench, name: str) -> None:
    """Train the dataset's fold through ``medgraft train`` and score its validation cases as
    the CPU CV does: a row in ``gpu_profile_folds.csv``, the cases in ``gpu_profile_cases.csv``."""
    import json

    from medgraft.lab.accuracy_cv import fold_record

    output, change = bench.fold_output(name), bench.fold_change(name)
    runs = list(fold_runs(name, dataset_folder(name), output, FOLD, change))
    train_folds(name, output, [FOLD], change=change)
    started = time.perf_counter()
    rows = evaluate_fold(name, output, FOLD, "recipe", change)
    scoring = time.perf_counter() - started
    resolved = json.loads((runs[0] / "config.json").read_text())
    trained = resolved["train_config"]
    record = fold_record(name, output, FOLD, runs)
    same = {r["case"] for r in rows} == cpu_fold_cases(name)
    tag = {"profile": trained["recipe_profile"] or "none", "commit": record["commit"]}
    append_csv(
        bench.results / "gpu_profile_cases.csv", [{**r, **tag} for r in rows],
        [*CASE_COLUMNS, *tag],
    )  # fmt: skip
    speeds = [
        float(epoch["samples_per_s"])
        for run in runs
        for epoch in read_csv(run / "metrics.csv")[1:] or read_csv(run / "metrics.csv")
    ]  # after the first epoch's warm-up
    means = {metric: _finite_mean([r[metric] for r in rows]) for metric in ("dice", "hd95", "nsd")}
    append_csv(bench.results / "gpu_profile_folds.csv", [{
        **record, "views": str(len(runs)), "amp_dtype": resolved["amp_dtype"],
        **{field: str(trained[field]) for field in FOLD_FIELDS},
        "same_split": "yes" if same else "no", "scoring_seconds": f"{scoring:.1f}",
        "loop_samples_per_s": f"{statistics.median(speeds):.0f}",
        **{f"mean_{metric}": f"{value:.4f}" for metric, value in means.items()},
    }])  # fmt: skip
    print(f"{name} fold {FOLD}: {float(record['seconds']) / 60:.1f} min training, mean Dice "
          f"{means['dice']:.4f}, HD95 {means['hd95']:.2f}, NSD {means['nsd']:.4f}, loop "
          f"{statistics.median(speeds):.0f} samples/s", flush=True)  # fmt: skip


def _finite_mean(values: list[str]) -> float:
    """The mean of the finite scores (a class missed in a case has no HD95)."""
    finite = [float(v) for v in values if v and math.isfinite(float(v))]
    return statistics.mean(finite) if finite else math.nan


def cpu_fold_cases(name: str) -> set[str]:
    """The validation cases of the CPU CV's fold, from the committed per-case scores."""
    return {
        row["case"]
        for row in read_csv(CHECKOUT / "docs/results/accuracy/cases.csv")
        if row["dataset"] == name and row["variant"] == "recipe" and int(row["fold"]) == FOLD
    }


def predict_speed(bench: Bench) -> None:
    """``medgraft predict`` with the hippocampus fold's models on its validation cases, under
    ``--amp auto`` and ``off``: ``gpu_predict.csv``."""
    output = bench.fold_output("hippocampus")
    change = bench.fold_change("hippocampus")
    runs = list(fold_runs("hippocampus", dataset_folder("hippocampus"), output, FOLD, change))
    inputs = fold_folder(output, FOLD, runs) / "val_images"
    cases = len(list(inputs.iterdir()))
    models = [flag for run in runs for flag in ("--model", str(run / "last.pt"))]
    for _ in range(bench.repeats):
        for amp in ("auto", "off"):
            with tempfile.TemporaryDirectory() as masks, Measurement() as measured:
                subprocess.run(
                    [sys.executable, "-m", "medgraft", "predict", *models, "-i", str(inputs),
                     "-o", masks, "--amp", amp, "--device", bench.device],
                    check=True,
                )  # fmt: skip
            append_csv(bench.results / "gpu_predict.csv", [{
                **measured.record(), "models": f"{len(runs)} (last.pt of each view)", "amp": amp,
                "cases": str(cases), "seconds_per_case": f"{measured.seconds / cases:.3f}",
            }])  # fmt: skip
            print(f"predict, amp {amp}: {measured.seconds:.1f} s for {cases} cases", flush=True)


BUDGET_SECONDS = 8 * 60
"""What one default call must stay under on one H100."""


def bench_from_arguments(args: argparse.Namespace) -> Bench:
    """The call's settings, refused at once (one line) without a CUDA GPU or the data."""
    import torch

    if not args.tiny and not torch.cuda.is_available():
        raise MedgraftError(
            "bench_gpu.py needs a CUDA GPU (torch sees none); --tiny checks its plumbing on the "
            "CPU in about a minute"
        )
    datasets = args.dataset or list(FOLD_ORDER)
    parts = args.part or list(DEFAULT_PARTS)
    needed = [*(datasets if "folds" in parts else []), *(["hippocampus"] * ("predict" in parts))]
    missing = [str(dataset_folder(name)) for name in dict.fromkeys(needed)]
    missing = [folder for folder in missing if not Path(folder).is_dir()]
    if missing:
        raise MedgraftError(
            f"no data at {', '.join(missing)}: the shared data belong in ../shared/data beside "
            "the checkout, shared/data inside it, or $MEDGRAFT_SHARED_DATA"
        )
    work = args.work.resolve()
    results = args.results or (work / "results" if args.tiny else CHECKOUT / "docs/results/bench")
    return Bench(
        work=work, results=results.resolve(), device="cpu" if args.tiny else "cuda",
        amp=args.amp, repeats=args.repeats, tiny=args.tiny,
    )  # fmt: skip


def run_parts(bench: Bench, parts: list[str], datasets: list[str]) -> None:
    """Each part in turn, with the time spent so far."""
    started = time.perf_counter()
    for part in parts:
        if part == "model":
            model_speed(bench)
        elif part == "profile-speed":
            profile_speed(bench)
        elif part == "folds":
            for name in [n for n in FOLD_ORDER if n in datasets]:
                train_and_score(bench, name)
        else:
            predict_speed(bench)
        spent = time.perf_counter() - started
        late = " (past the 8-minute budget)" if spent > BUDGET_SECONDS and not bench.tiny else ""
        print(f"{part}: done at {spent / 60:.1f} min{late}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="What one CUDA GPU buys the shipped recipes.")
    parser.add_argument("--work", type=Path, default=Path("runs/gpu"))
    parser.add_argument("--results", type=Path, help="default: docs/results/bench")
    parser.add_argument("--repeats", type=int, default=1, help="of the model-alone tables")
    parser.add_argument(
        "--amp", choices=["auto", "fp16", "bf16", "off"],
        help="the folds' precision (default: each cuda profile's, --amp auto)",
    )  # fmt: skip
    parser.add_argument("--part", choices=PARTS, action="append",
                        help=f"parts to run (default: {', '.join(DEFAULT_PARTS)})")  # fmt: skip
    parser.add_argument("--dataset", choices=FOLD_ORDER, action="append",
                        help="folds to train (default: all three)")  # fmt: skip
    parser.add_argument(
        "--tiny", action="store_true",
        help="every part on the CPU, a few steps, into <work>/results: checks the plumbing",
    )  # fmt: skip
    args = parser.parse_args()
    os.chdir(CHECKOUT)
    try:
        bench = bench_from_arguments(args)
    except MedgraftError as refused:
        sys.exit(f"error: {refused}")
    if not bench.tiny:
        print(f"GPU: {cuda_device_name()}", flush=True)
    run_parts(bench, args.part or list(DEFAULT_PARTS), args.dataset or list(FOLD_ORDER))
