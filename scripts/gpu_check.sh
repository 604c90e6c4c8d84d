#!/usr/bin/env bash
# Short CUDA training check on the embedded demo data: fp16 and bf16 autocast, channels_last.
# Prints slices/s (training phase, per epoch) and peak GPU memory. Run from the repository root
# on a machine with a CUDA GPU: bash scripts/gpu_check.sh [epochs] [batch size]
set -euo pipefail
epochs="${1:-3}"
batch="${2:-128}"
python - "$epochs" "$batch" <<'PY'
import csv, sys, tempfile
from pathlib import Path

import torch

from medgraft.config.schema import TrainConfig
from medgraft.training.trainer import train

epochs, batch = int(sys.argv[1]), int(sys.argv[2])
assert torch.cuda.is_available(), "gpu_check needs a CUDA GPU"
print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
for amp in ("fp16", "bf16"):
    torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        result = train(TrainConfig(
            data="data/hippocampus", output=str(Path(tmp) / amp), epochs=epochs,
            batch_size=batch, amp=amp, device="cuda", channels_last=True, offline=True,
            val_fraction=0.25, num_workers=4,
        ))
        rows = list(csv.DictReader((result.run_dir / "metrics.csv").open()))
    speeds = ", ".join(f"{float(r['samples_per_s']):.0f}" for r in rows)
    peak = torch.cuda.max_memory_allocated() / 1024**3
    print(f"{amp}: slices/s per epoch [{speeds}], best val Dice {result.best_dice:.3f}, "
          f"peak GPU memory {peak:.2f} GiB")
PY
