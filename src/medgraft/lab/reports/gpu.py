"""The benchmark blocks (bench-train, bench-predict, bench-amp-cpu, bench-gpu, gpu-profiles) and
the GPU page (``docs/results/gpu.md``), from ``docs/results/bench/*.csv``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medgraft.evaluation.stats import difference_interval, mean_interval
from medgraft.files import read_csv
from medgraft.lab.measured import note
from medgraft.lab.reports.accuracy import accuracy_sources
from medgraft.lab.reports.common import (
    DATASETS,
    RESULTS,
    block,
    median,
    paired_dice,
    render,
    wall_text,
)


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
    return block(
        "bench_amp_cpu_block.md.j2",
        first=rows[0],
        fp32=speed["fp32"],
        bf16=speed["bf16"],
        runs=len(rows),
        shared=sum(r["shared"] == "yes" for r in rows),
        measured=note(root, "amp-cpu"),
    )


def _cpu_fold_rows(root: Path, fold: int) -> tuple[list[dict], list[dict]]:
    """The CPU CV's per-case scores and fold record of one hippocampus fold."""
    cases, folds = accuracy_sources(root)
    return (
        [r for r in cases if r["dataset"] == "hippocampus" and r["variant"] == "recipe"
         and int(r["fold"]) == fold],
        [f for f in folds if f["dataset"] == "hippocampus"],
    )  # fmt: skip


def gpu_fold(root: Path) -> tuple[dict, list[dict]] | None:
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
    fold, gpu_cases = gpu_fold(root)
    cpu_cases, cpu_folds = _cpu_fold_rows(root, int(fold["fold"]))
    return fold, gpu_cases, cpu_cases, cpu_folds


def bench_gpu_readme(root: Path) -> str:
    """One GPU against 2 CPU cores on the hippocampus recipe's fold (``bench_gpu.py``)."""
    if gpu_fold(root) is None:
        return "not measured with this version"
    fold, gpu_cases, cpu_cases, cpu_folds = _gpu_and_cpu(root)
    gpu, cpu = paired_dice(gpu_cases, cpu_cases, None)
    return block(
        "bench_gpu_block.md.j2",
        fold=fold,
        amp=fold["amp"].split()[0],
        gpu_wall=_gpu_wall_text(fold),
        cpu_folds=len(cpu_folds),
        cpu_wall=wall_text(cpu_folds),
        dice=mean_interval(gpu),
        difference=difference_interval(gpu, cpu),
        measured=note(root, "gpu"),
    )


GPU_GOALS = {"kvasir": 0.93, "drive": 0.82, "hippocampus": 0.89}
"""Mean foreground Dice each cuda profile's fold 0 is to reach on one GPU (issue 42)."""
PROFILES_NOT_RUN = "`scripts/bench_gpu.py` has not run on a GPU since the cuda profiles were added"


def profile_folds(root: Path) -> list[dict]:
    """The latest fold trained under each cuda profile (``bench_gpu.py --part folds``)."""
    latest = {row["dataset"]: row for row in bench_rows(root, "gpu_profile_folds")}
    return [latest[name] for name in DATASETS if name in latest]


def gpu_profiles_readme(root: Path) -> str:
    """What the recipes' cuda profiles scored on one GPU, or that they were not measured."""
    folds = profile_folds(root)
    if not folds:
        return f"accuracy and speed not measured: {PROFILES_NOT_RUN}"
    parts = [
        f"`{f['recipe']}` {float(f['mean_dice']):.3f} mean Dice on {f['dataset']} in "
        f"{float(f['seconds']) / 60:.1f} min of training"
        for f in folds
    ]
    return (
        "; ".join(parts) + f", on one {folds[-1]['gpu']} ([docs/results/gpu.md]"
        f"(docs/results/gpu.md); {note(root, 'gpu-profiles')})"
    )


def _profile_fold_rows(root: Path) -> list[tuple]:
    """Per fold: what it trained, its time and speed, its Dice against the CPU fold's (paired
    by case), HD95, NSD and the goal."""
    cases = bench_rows(root, "gpu_profile_cases")
    cpu_cases, _ = accuracy_sources(root)
    rows = []
    for fold in profile_folds(root):
        name, number = fold["dataset"], int(fold["fold"])
        ours = [c for c in cases if c["dataset"] == name and c["commit"] == fold["commit"]]
        cpu = [c for c in cpu_cases if c["dataset"] == name and c["variant"] == "recipe"
               and int(c["fold"]) == number]  # fmt: skip
        gpu_dice, cpu_dice = paired_dice(ours, cpu, None)
        size = f"{fold['image_size']} px" if name != "hippocampus" else f"{fold['views']} views"
        rows.append((
            f"`{fold['recipe']}`", f"{name} fold {number}, {fold['cases']} cases",
            f"{size}, {fold['epochs']} epochs, batch {fold['batch_size']}, {fold['amp_dtype']}",
            f"{float(fold['seconds']) / 60:.1f} min", fold["loop_samples_per_s"],
            f"{mean_interval(dice_of(ours))}",
            _against_cpu(gpu_dice, cpu_dice),
            f"{float(fold['mean_hd95']):.2f}", f"{float(fold['mean_nsd']):.3f}",
            f"{GPU_GOALS[name]:.2f}",
        ))  # fmt: skip
    return rows


def _against_cpu(gpu: np.ndarray, cpu: np.ndarray) -> str:
    """GPU - CPU Dice on the cases both scored, with its verdict."""
    if not len(gpu):
        return "no case in common"
    change = difference_interval(gpu, cpu)
    return f"{change}, {change.verdict} ({len(gpu)} cases)"


def dice_of(cases: list[dict]) -> list[float]:
    """Each case's mean foreground Dice."""
    by_case: dict[str, list[float]] = {}
    for row in cases:
        by_case.setdefault(row["case"], []).append(float(row["dice"]))
    return [sum(v) / len(v) for v in by_case.values()]


def _profile_speed_rows(root: Path) -> list[tuple]:
    """Per profile shape, precision and memory format: the median samples/s of the model alone
    and its ratio to fp32 in the same memory format."""
    speed = bench_rows(root, "gpu_profile_speed")
    keys = dict.fromkeys((r["recipe"], r["precision"], r["channels_last"]) for r in speed)
    medians = {
        key: median([float(r["samples_per_s"]) for r in speed
                     if (r["recipe"], r["precision"], r["channels_last"]) == key])
        for key in keys
    }  # fmt: skip
    rows = []
    for key in keys:
        recipe, precision, memory = key
        first = next(r for r in speed if (r["recipe"], r["precision"], r["channels_last"]) == key)
        fp32 = medians.get((recipe, "fp32", memory))
        runs = sum((r["recipe"], r["precision"], r["channels_last"]) == (recipe, precision, memory)
                   for r in speed)  # fmt: skip
        rows.append((
            f"`{recipe}`", f"{first['encoder']}, {first['side']} px, batch {first['batch_size']}",
            precision, memory, runs, f"{medians[(recipe, precision, memory)]:.0f}",
            f"{medians[(recipe, precision, memory)] / fp32:.2f}x" if fp32 else "-",
            f"{first['peak_gpu_memory_gib']} GiB",
        ))  # fmt: skip
    return rows


def gpu_page(root: Path) -> str:
    """The GPU measurements of ``bench_gpu.py``: the cuda profiles' folds and training steps,
    the hippocampus fold of the CPU recipe, prediction, the model alone."""
    fold, gpu_cases, cpu_cases, cpu_folds = _gpu_and_cpu(root)
    classes = []
    for class_name in [*dict.fromkeys(r["class"] for r in gpu_cases), None]:
        gpu, cpu = paired_dice(gpu_cases, cpu_cases, class_name)
        change = difference_interval(gpu, cpu)
        classes.append(
            (class_name or "mean foreground", mean_interval(cpu), mean_interval(gpu), change,
             change.verdict)
        )  # fmt: skip
    predict = bench_rows(root, "gpu_predict")
    predictions = []
    for amp in dict.fromkeys(r["amp"] for r in predict):
        runs = [r for r in predict if r["amp"] == amp]
        seconds = median([float(r["seconds_per_case"]) for r in runs])
        predictions.append((amp, len(runs), runs[0]["cases"], f"{seconds:.2f}"))
    model = bench_rows(root, "gpu_train")
    speeds = []
    for key in dict.fromkeys((r["precision"], r["batch_size"]) for r in model):
        runs = [r for r in model if (r["precision"], r["batch_size"]) == key]
        each = [float(r["slices_per_s"]) for r in runs]
        speeds.append(
            (*key, len(runs), f"{median(each):.0f}; {min(each):.0f} to {max(each):.0f}",
             f"{runs[0]['peak_gpu_memory_gib']} GiB")
        )  # fmt: skip
    return render(
        "gpu.md.j2",
        profile_folds=_profile_fold_rows(root),
        profile_speeds=_profile_speed_rows(root),
        profiles_measured=note(root, "gpu-profiles") if profile_folds(root) else "",
        not_run=PROFILES_NOT_RUN,
        fold=fold,
        amp=fold["amp"].split()[0],
        autocast=fold["amp"].split()[-1].strip("()"),
        measured=note(root, "gpu"),
        gpu_wall=_gpu_wall_text(fold),
        cpu_folds=len(cpu_folds),
        cpu_wall=wall_text(cpu_folds),
        classes=classes,
        predictions=predictions,
        model=model[0],
        speeds=speeds,
    )
