"""Is the training pipeline fast enough to keep the model busy?

Runs the real ``medgraft train`` loop on ``../shared/data/hippocampus`` and, in the same
process, a model-only loop: the same model, loss, optimizer and batch size on tensors already
in memory. Prints samples/s of both after the first epoch, their ratio (goal: >= 0.9 on the
CPU) and the peak RSS.

    python scripts/bench_train.py [--cases 24] [--epochs 3] [--no-augment] [--num-workers 0]
"""

from __future__ import annotations

import argparse
import csv
import resource
import tempfile
import time
from pathlib import Path

import torch
from monai.losses import DiceCELoss
from shared_subsets import hippocampus_subset

from medgraft.config.schema import AugmentOptions, TrainConfig
from medgraft.models.registry import DEFAULT_ENCODER, get_encoder
from medgraft.models.unet import architecture, build_segmenter
from medgraft.training.trainer import train


def model_only(batch_size: int, steps: int, shape: tuple[int, int], classes: int) -> float:
    """Samples/s of forward + backward + step on in-memory tensors (the ceiling)."""
    spec = get_encoder(DEFAULT_ENCODER)
    model = build_segmenter(architecture(spec, 3, classes), spec).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    images = torch.rand(batch_size, 3, *shape)
    labels = torch.randint(0, classes, (batch_size, 1, *shape))
    for step in range(steps + 2):
        if step == 2:  # after warm-up
            started = time.perf_counter()
        loss = loss_fn(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args()
    steps = max(10, int(args.cases * 0.9) * 64 // args.batch_size // 4)
    # the ceiling is measured before and after training and the faster kept: on a shared
    # 2-core machine single measurements of the same loop vary by 10-20%
    ceilings = [model_only(args.batch_size, steps, (64, 64), 3)]
    with tempfile.TemporaryDirectory() as tmp:
        data = hippocampus_subset(Path(tmp), args.cases, seed=0)
        result = train(
            TrainConfig(
                data=str(data),
                output=str(Path(tmp) / "run"),
                epochs=args.epochs,
                batch_size=args.batch_size,
                val_fraction=0.1,
                offline=True,
                augment=AugmentOptions(enabled=not args.no_augment, flips=False),
                num_workers=args.num_workers,
            )
        )
        rows = list(csv.DictReader((result.run_dir / "metrics.csv").open()))
    pipeline = [float(r["samples_per_s"]) for r in rows[1:]] or [float(rows[0]["samples_per_s"])]
    pipeline_speed = sum(pipeline) / len(pipeline)
    ceilings.append(model_only(args.batch_size, steps, (64, 64), 3))
    ceiling = max(ceilings)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(
        f"training loop (epochs 2..{args.epochs}, augmentation "
        f"{'off' if args.no_augment else 'on'}, {args.num_workers} workers): "
        f"{pipeline_speed:.1f} slices/s"
    )
    print(
        f"model-only loop: {ceiling:.1f} slices/s (before/after: "
        f"{ceilings[0]:.1f}/{ceilings[1]:.1f}); ratio {pipeline_speed / ceiling:.2f} "
        "(goal >= 0.9)"
    )
    print(f"peak RSS {peak:.2f} GB; torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
