"""Is the training pipeline fast enough to keep the model busy?

Runs the real ``medgraft train`` loop on ``../shared/data/hippocampus`` and, in the same
process, a model-only loop: the same model, loss, optimizer and batch size on tensors already
in memory. Measures samples/s of both after the first epoch, their ratio (goal: >= 0.9 on the
CPU) and the peak RSS, with augmentation off and on, ``--repeats`` times each; every run
appends a row (with the machine and the load) to ``docs/results/bench/train.csv``.

    python scripts/bench_train.py [--cases 24] [--epochs 2] [--repeats 3] [--num-workers 0]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from medgraft.config.schema import AugmentOptions, TrainConfig
from medgraft.files import append_csv, read_csv
from medgraft.lab import CHECKOUT
from medgraft.lab.bench import model_only
from medgraft.lab.shared_subsets import hippocampus_subset
from medgraft.provenance import Measurement
from medgraft.training.trainer import run_training


def measure(args: argparse.Namespace, augment: bool) -> dict[str, str]:
    """One run: the real loop's samples/s after its first epoch, the model-only ceiling
    (before and after training, the faster kept: single measurements of the same loop vary by
    10-20% on a 2-core machine), their ratio and the process's peak RSS so far."""
    steps = max(10, int(args.cases * 0.9) * 64 // args.batch_size // 4)
    with Measurement() as measured:
        ceilings = [model_only(args.batch_size, steps, (64, 64), 3)]
        with tempfile.TemporaryDirectory() as tmp:
            data = hippocampus_subset(Path(tmp), args.cases, seed=0)
            result = run_training(
                TrainConfig(
                    data=str(data),
                    output=str(Path(tmp) / "run"),
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    val_fraction=0.1,
                    offline=True,
                    augment=AugmentOptions(enabled=augment, flips=False),
                    num_workers=args.num_workers,
                )
            )
            rows = read_csv(result.run_dir / "metrics.csv")
        ceilings.append(model_only(args.batch_size, steps, (64, 64), 3))
    pipeline = statistics.mean(float(r["samples_per_s"]) for r in rows[1:])
    ceiling = max(ceilings)
    return {
        **measured.record(),
        "cases": str(args.cases),
        "epochs": str(args.epochs),
        "batch_size": str(args.batch_size),
        "num_workers": str(args.num_workers),
        "augment": "on" if augment else "off",
        "pipeline_slices_per_s": f"{pipeline:.1f}",
        "model_only_slices_per_s": f"{ceiling:.1f}",
        "ratio": f"{pipeline / ceiling:.3f}",
        "peak_rss_gb": f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.3f}",
        "torch_threads": str(torch.get_num_threads()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="runs per augmentation setting")
    parser.add_argument("--csv", type=Path, default=CHECKOUT / "docs/results/bench/train.csv")
    parser.add_argument("--single", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is warm-up")
    if args.single:  # one run in this fresh process, so its peak RSS is its own
        append_csv(args.csv, [measure(args, args.single == "on")])
        return
    for _ in range(args.repeats):
        for augment in ("off", "on"):
            own = ["--cases", str(args.cases), "--epochs", str(args.epochs)]
            own += ["--batch-size", str(args.batch_size), "--num-workers", str(args.num_workers)]
            command = [sys.executable, __file__, *own, "--csv", str(args.csv), "--single", augment]
            subprocess.run(command, check=True)
            row = read_csv(args.csv)[-1]
            print(
                f"augmentation {row['augment']}: loop {row['pipeline_slices_per_s']} slices/s, "
                f"model-only {row['model_only_slices_per_s']}, ratio {row['ratio']}, peak RSS "
                f"{row['peak_rss_gb']} GB, other jobs {row['other_jobs_cores']} cores",
                flush=True,
            )


if __name__ == "__main__":
    main()
