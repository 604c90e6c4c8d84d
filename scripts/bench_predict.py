"""Throughput and memory of ``medgraft predict``.

1. cases/s and slices/s of the real predict path (read NIfTI → preprocess → streamed 2.5D
   inference → write mask) on ``../shared/data/hippocampus/imagesTs``, against a model-only loop:
   the same model's forward passes over the same slice stacks, already in memory, in one
   process. TTA off, so both do the same forward work. The ratio shows the pipeline's overhead.
2. Peak RSS of segmenting one synthetic 512 x 512 x 400 volume (a CT-sized case) in a fresh
   subprocess, to show memory stays bounded by the slice batch.

    python scripts/bench_predict.py --model runs/<demo>/model [--cases 40] [--repeats 3]

Each repeat appends a row (with the machine and the load) to ``docs/results/bench/predict.csv``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medgraft.config.schema import PredictOptions
from medgraft.data.scans import read_scan_for_model
from medgraft.data.slicing import volume_to_stacks
from medgraft.files import append_csv
from medgraft.inference.batch import load_predictor, predict_cases
from medgraft.lab import CHECKOUT
from medgraft.lab.shared_subsets import SHARED
from medgraft.provenance import Measurement


def pipeline_vs_model(model: Path, cases: list[Path], batch_size: int) -> dict[str, float]:
    options = PredictOptions(batch_size=batch_size, tta=False, overwrite=True)
    predictor = load_predictor([model], options)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        results = list(predict_cases(predictor, cases, Path(out), options))
        pipeline_seconds = time.perf_counter() - started
    slices = sum(r.slices for r in results)
    stacks = [
        volume_to_stacks(
            read_scan_for_model(c, predictor.inputs.preprocessing).image, predictor.inputs.slices
        )
        for c in cases
    ]
    net = predictor.models[0]
    started = time.perf_counter()
    with torch.no_grad():
        for volume_stacks in stacks:
            for start in range(0, len(volume_stacks), batch_size):
                net(predictor.pad(volume_stacks[start : start + batch_size]))
    model_seconds = time.perf_counter() - started
    return {
        "cases": len(cases),
        "slices": slices,
        "pipeline_cases_per_s": len(cases) / pipeline_seconds,
        "pipeline_slices_per_s": slices / pipeline_seconds,
        "model_only_slices_per_s": slices / model_seconds,
        "ratio": model_seconds / pipeline_seconds,
    }


def large_volume_peak_rss(model: Path, batch_size: int, shape=(512, 512, 400)) -> dict[str, float]:
    """Run predict on one synthetic CT-sized volume in a subprocess and read its peak RSS."""
    folder = Path(tempfile.mkdtemp())
    try:
        rng = np.random.default_rng(0)
        volume = rng.normal(0, 300, shape).astype(np.int16)
        (folder / "in").mkdir()
        nib.save(
            nib.Nifti1Image(volume, np.diag([0.7, 0.7, 1.0, 1.0])), str(folder / "in" / "ct.nii.gz")
        )
        del volume
        code = (
            "import resource, sys, time; from pathlib import Path;"
            "from medgraft.config.schema import PredictOptions;"
            "from medgraft.inference.batch import load_predictor, predict_cases;"
            f"o = PredictOptions(batch_size={batch_size}, tta=False, overwrite=True);"
            f"p = load_predictor([Path({str(model)!r})], o); t = time.perf_counter();"
            f"r = list(predict_cases(p, [Path({str(folder / 'in' / 'ct.nii.gz')!r})], "
            f"Path({str(folder / 'out')!r}), o));"
            "print(r[0].status, r[0].message, time.perf_counter() - t,"
            " resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        output = done.stdout.split()
        return {
            "status": output[0],
            "seconds": float(output[-2]),
            "peak_rss_gb": int(output[-1]) / 1024**2,
        }
    finally:
        shutil.rmtree(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="runs; the report takes medians")
    parser.add_argument("--csv", type=Path, default=CHECKOUT / "docs/results/bench/predict.csv")
    args = parser.parse_args()
    cases = sorted((SHARED / "hippocampus" / "imagesTs").glob("*.nii.gz"))[: args.cases]
    for _ in range(args.repeats):
        with Measurement() as measured:
            speed = pipeline_vs_model(args.model, cases, args.batch_size)
            large = large_volume_peak_rss(args.model, args.batch_size)
        print(
            f"predict pipeline: {speed['pipeline_cases_per_s']:.2f} cases/s, "
            f"{speed['pipeline_slices_per_s']:.0f} slices/s over {speed['cases']} cases; "
            f"model-only forward {speed['model_only_slices_per_s']:.0f} slices/s; ratio "
            f"{speed['ratio']:.2f}; 512x512x400 volume: {large['status']} in "
            f"{large['seconds']:.0f}s, peak RSS {large['peak_rss_gb']:.2f} GB",
            flush=True,
        )
        row = {
            **measured.record(),
            "batch_size": args.batch_size,
            **{k: f"{v:.3f}" if isinstance(v, float) else v for k, v in speed.items()},
            "large_volume_shape": "512 x 512 x 400",
            "large_volume_seconds": f"{large['seconds']:.1f}",
            "large_volume_peak_rss_gb": f"{large['peak_rss_gb']:.3f}",
        }
        append_csv(args.csv, [row])
    print(f"appended {args.repeats} rows to {args.csv}")


if __name__ == "__main__":
    main()
