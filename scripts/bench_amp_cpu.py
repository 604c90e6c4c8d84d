"""Is bf16 autocast worth it on this CPU? Training steps per second in fp32 and under bf16.

The issue asks for ``--amp bf16`` as the CPU default only if it is faster with no loss of
Dice. This measures the speed half on the model-only loop of ``bench_train.py`` (the same model,
loss and optimizer ``medgraft train`` uses, tensors already in memory) at the 3D recipe's
shape, alternating fp32 and bf16 ``--repeats`` times; each run appends a row with the machine, the
CPU's bf16/AMX flags and the load to ``docs/results/bench/amp_cpu.csv``.

    python scripts/bench_amp_cpu.py [--repeats 3] [--steps 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from medgraft.files import append_csv
from medgraft.lab import CHECKOUT
from medgraft.lab.bench import model_only
from medgraft.provenance import Measurement

SHAPES = {
    # recipe: (batch, height, width, classes), as the recipe trains
    "mri-2.5d": (32, 64, 64, 3),
}
DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def cpu_flags() -> str:
    """The CPU's bf16 and AMX instruction-set flags, as the kernel lists them ("" if none)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = line.split(":", 1)[1].split()
            return " ".join(f for f in flags if "bf16" in f or f.startswith("amx"))
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per recipe and precision")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run (after 2)")
    parser.add_argument("--csv", type=Path, default=CHECKOUT / "docs/results/bench/amp_cpu.csv")
    args = parser.parse_args()
    for _ in range(args.repeats):
        for recipe, (batch, height, width, classes) in SHAPES.items():
            for precision, dtype in DTYPES.items():
                with Measurement() as measured:
                    speed = model_only(batch, args.steps, (height, width), classes, dtype)
                row = {
                    **measured.record(),
                    "recipe": recipe,
                    "precision": precision,
                    "batch_size": str(batch),
                    "image_size": f"{height}x{width}",
                    "steps": str(args.steps),
                    "samples_per_s": f"{speed:.2f}",
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "cpu_bf16_flags": cpu_flags() or "none",
                    "torch_threads": str(torch.get_num_threads()),
                }
                append_csv(args.csv, [row])
                print(f"{recipe} {precision}: {speed:.2f} samples/s", flush=True)


if __name__ == "__main__":
    main()
