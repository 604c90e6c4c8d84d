"""``scripts/bench_gpu.py``: it refuses at once without a CUDA GPU or the data, and ``--tiny``
runs its parts end to end on the CPU (a few steps, tiny data) into its own results folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medgraft.files import read_csv
from medgraft.lab.gpu_bench import profile_shapes

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_gpu.py"


def bench(*args: str, shared: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = os.environ | {"MEDGRAFT_SHARED_DATA": str(shared), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
        timeout=timeout, check=False,
    )  # fmt: skip


def test_without_a_gpu_or_the_data_it_stops_at_once_saying_why(tmp_path: Path) -> None:
    no_gpu = bench("--work", str(tmp_path / "w"), shared=tmp_path, timeout=120)
    assert no_gpu.returncode == 1 and "needs a CUDA GPU" in no_gpu.stderr
    assert "--tiny" in no_gpu.stderr and "Traceback" not in no_gpu.stderr
    no_data = bench("--tiny", "--work", str(tmp_path / "w"), shared=tmp_path, timeout=120)
    assert no_data.returncode == 1 and f"no data at {tmp_path / 'kvasir-seg'}" in no_data.stderr
    assert not (tmp_path / "w").exists()


def test_the_profile_shapes_are_the_cuda_profiles() -> None:
    shapes = {shape["recipe"]: shape for shape in profile_shapes(tiny=False)}
    assert shapes["rgb-2d"]["side"] >= 352 and shapes["rgb-2d"]["encoder"].endswith("lite2")
    assert shapes["retina-2d"]["side"] == 768 and shapes["mri-2.5d"]["batch_size"] == 128


@pytest.mark.slow
def test_tiny_runs_every_part_on_the_cpu_into_its_own_results(
    drive_layout: Path, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shutil.copytree(drive_layout, shared / "drive" / "training")
    work = tmp_path / "work"
    args = ["--tiny", "--work", str(work), "--dataset", "drive"]
    done = bench(*args, "--part", "profile-speed", "--part", "folds", "--part", "model",
                 shared=shared)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = work / "results"
    speed = read_csv(results / "gpu_profile_speed.csv")
    assert {(r["recipe"], r["channels_last"]) for r in speed} == {
        (recipe, memory)
        for recipe in ("mri-2.5d", "rgb-2d", "retina-2d")
        for memory in ("off", "on")
    }
    [fold] = read_csv(results / "gpu_profile_folds.csv")
    assert (fold["dataset"], fold["recipe"], fold["fold"], fold["epochs"]) == (
        "drive", "retina-2d", "0", "1",
    )  # fmt: skip
    assert fold["gpu"] == "none" and float(fold["seconds"]) > 0 and float(fold["mean_dice"]) >= 0
    assert fold["same_split"] == "no"  # tiny data: not the CPU CV's cases
    cases = read_csv(results / "gpu_profile_cases.csv")
    assert cases and {r["case"] for r in cases} <= {f"{i}_training" for i in range(21, 27)}
    assert read_csv(results / "gpu_train.csv")[0]["precision"] == "fp32"
    assert "folds: done at" in done.stdout
