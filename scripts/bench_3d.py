"""How fast does each 3D design train on this CPU? (issue: measure before the long runs.)

A trainer step (forward, DiceCE loss, backward, AdamW) of the 3D U-Net on in-memory one-channel
volumes, for each way of carrying the 2D encoder into 3D (``acs``: 2D convolutions on planes;
``inflate``: 3D convolutions) and each decoder width, beside the 2.5D U-Net's step at its
recipe's batch. Each design runs ``--repeats`` times in turn (interleaved, so a change in the
machine's load touches every design alike); each run appends its median step to
``docs/results/bench/volume_step.csv`` with the machine and the load.

    python scripts/bench_3d.py [--repeats 5] [--steps 6] [--patch 64,64,64] [--batch-size 2]
"""

from __future__ import annotations

import argparse
import statistics

from medgraft.files import append_csv
from medgraft.lab import CHECKOUT
from medgraft.lab.bench import model_only, volume_step_seconds
from medgraft.provenance import Measurement

CSV = CHECKOUT / "docs/results/bench/volume_step.csv"
DESIGNS = [
    ("acs", (128, 64, 32, 16)),
    ("inflate", (128, 64, 32, 16)),
    ("acs", (256, 128, 64, 32)),
    ("inflate", (256, 128, 64, 32)),
]
SLICE_BATCH = 32
"""The 2.5D recipe's batch of 3 x 64 x 64 stacks."""


def one_round(args: argparse.Namespace, patch: tuple[int, int, int]) -> None:
    for conversion, decoder in DESIGNS:
        with Measurement() as measured:
            seconds = volume_step_seconds(conversion, decoder, args.batch_size, patch, args.steps)
        step = statistics.median(seconds)
        slices = args.batch_size * patch[2] / step  # axial 2D slice-equivalents per second
        append_csv(CSV, [{
            **measured.record(), "design": f"3d-{conversion}",
            "decoder": "-".join(map(str, decoder)),
            "batch": str(args.batch_size), "shape": "x".join(map(str, patch)),
            "step_seconds": f"{step:.3f}", "slice_equivalents_per_s": f"{slices:.1f}",
        }])  # fmt: skip
        print(f"3d-{conversion} {decoder}: {step:.3f} s/step, {slices:.0f} slices/s", flush=True)
    with Measurement() as measured:
        per_second = model_only(SLICE_BATCH, args.steps, (patch[0], patch[1]), 3)
    append_csv(CSV, [{
        **measured.record(), "design": "2.5d", "decoder": "256-128-64-32-16",
        "batch": str(SLICE_BATCH), "shape": f"3x{patch[0]}x{patch[1]}",
        "step_seconds": f"{SLICE_BATCH / per_second:.3f}",
        "slice_equivalents_per_s": f"{per_second:.1f}",
    }])  # fmt: skip
    print(f"2.5d: {per_second:.0f} slices/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--patch", default="64,64,64")
    args = parser.parse_args()
    patch = tuple(int(v) for v in args.patch.split(","))
    for _ in range(args.repeats):
        one_round(args, patch)


if __name__ == "__main__":
    main()
