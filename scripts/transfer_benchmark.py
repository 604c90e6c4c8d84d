"""ImageNet initialisation vs training from scratch, same model and budget, on real data.

For each dataset, fine-tunes the default U-Net twice — ``--weights imagenet`` and
``--weights none``, everything else identical — and writes validation Dice per epoch to a CSV
and a PNG plot. Uses ``../shared/data`` (MSD hippocampus MRI, Kvasir-SEG endoscopy). Resumable:
runs whose metrics already cover every epoch are skipped.

    python scripts/transfer_benchmark.py --output docs/results/transfer_benchmark
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from shared_subsets import hippocampus_subset, kvasir_subset

from medgraft.config.loading import resolve_options
from medgraft.config.schema import TrainConfig
from medgraft.training.trainer import train


def finished(run_dir: Path, epochs: int) -> bool:
    metrics = run_dir / "metrics.csv"
    return metrics.exists() and len(list(csv.DictReader(metrics.open()))) >= epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("docs/results/transfer_benchmark"))
    parser.add_argument("--work", type=Path, default=Path("runs/transfer_benchmark"))
    parser.add_argument("--hippocampus-cases", type=int, default=48)
    parser.add_argument("--hippocampus-epochs", type=int, default=6)
    parser.add_argument("--kvasir-cases", type=int, default=200)
    parser.add_argument("--kvasir-epochs", type=int, default=8)
    parser.add_argument("--kvasir-size", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    datasets = {
        "hippocampus (3D MRI, 2.5D)": (
            hippocampus_subset(args.work / "data-hippocampus", args.hippocampus_cases, args.seed),
            args.hippocampus_epochs,
            {},
        ),
        "kvasir-seg (2D RGB)": (
            kvasir_subset(args.work / "data-kvasir", args.kvasir_cases, args.seed),
            args.kvasir_epochs,
            {"image_size": args.kvasir_size, "batch_size": 16},
        ),
    }
    rows = []
    for dataset, (data_dir, epochs, options) in datasets.items():
        for init in ("imagenet", "none"):
            run_dir = args.work / f"{data_dir.name}-{init}"
            if not finished(run_dir, epochs):
                this_run = {
                    "data": str(data_dir),
                    "output": str(run_dir),
                    "weights": init,
                    "epochs": epochs,
                    "val_fraction": 0.25,
                    "seed": args.seed,
                    "offline": True,
                    "overwrite": True,
                }
                train(TrainConfig(**resolve_options([options, this_run])))
            for row in csv.DictReader((run_dir / "metrics.csv").open()):
                rows.append(
                    {
                        "dataset": dataset,
                        "init": init,
                        "epoch": int(row["epoch"]),
                        "val_mean_dice": float(row["val_mean_dice"]),
                        "train_loss": float(row["train_loss"]),
                        "seconds": float(row["seconds"]),
                    }
                )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    figure, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for axis, dataset in zip(axes[0], datasets, strict=True):
        for init, style in (("imagenet", "-o"), ("none", "--s")):
            points = [
                (r["epoch"], r["val_mean_dice"])
                for r in rows
                if r["dataset"] == dataset and r["init"] == init
            ]
            axis.plot(
                *zip(*points, strict=True),
                style,
                label="ImageNet init" if init == "imagenet" else "scratch",
            )
        axis.set(title=dataset, xlabel="epoch", ylabel="validation mean Dice", ylim=(0, 1))
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(args.output.with_suffix(".png"), dpi=120)
    lines = [
        "# ImageNet initialisation vs scratch (same model, same budget)",
        "",
        f"Command: `python scripts/transfer_benchmark.py` (seed {args.seed}); hardware: "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads, no GPU.",
        f"Hippocampus: {args.hippocampus_cases} random cases of `../shared/data/hippocampus`, "
        f"25% held out for validation, {args.hippocampus_epochs} epochs, 2.5D k=3. Kvasir-SEG: "
        f"{args.kvasir_cases} random images, 25% held out, {args.kvasir_epochs} epochs at "
        f"{args.kvasir_size} px. Encoder `tu-tf_efficientnet_lite0`; everything but the initial "
        "encoder weights is identical. Plot: "
        f"[{args.output.with_suffix('.png').name}]({args.output.with_suffix('.png').name}); "
        f"data: [{args.output.with_suffix('.csv').name}]({args.output.with_suffix('.csv').name}).",
        "",
        "| dataset | init | validation mean Dice per epoch | best | train time |",
        "| --- | --- | --- | --- | --- |",
    ]
    for dataset in datasets:
        for init in ("imagenet", "none"):
            runs = [r for r in rows if r["dataset"] == dataset and r["init"] == init]
            curve = " ".join(f"{r['val_mean_dice']:.3f}" for r in runs)
            best = max(r["val_mean_dice"] for r in runs)
            seconds = sum(r["seconds"] for r in runs)
            lines.append(f"| {dataset} | {init} | {curve} | {best:.3f} | {seconds:.0f} s |")
            print(f"{dataset:28s} {init:9s} {curve}  best {best:.3f} ({seconds:.0f}s)")
    args.output.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
