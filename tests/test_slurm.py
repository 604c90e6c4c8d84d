"""``--launcher slurm`` on a real one-node Slurm cluster with accounting (``slurm_cluster``):
sharded prediction equal to a local run, a cancelled task redone on the rerun, a failing job
reported with its log, a study gathered as the local one, and the documented multi-node
training command in its one-node form."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import invoke, write_nifti
from slurm_cluster import free_port

from medgraft.launchers import JOBS_FILE, SLURM_FOLDER

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPOSITORY = Path(__file__).resolve().parents[1]
ONE_CPU = ["--cpus", "1", "--time", "10"]
"""Each job on one of the test node's cores, so two run side by side."""


@pytest.fixture(scope="module")
def scans(tiny_msd: Path, tmp_path_factory) -> Path:
    """Five small MRI crops: two shards' worth."""
    folder = tmp_path_factory.mktemp("slurm_scans")
    images = sorted((tiny_msd / "imagesTr").glob("*.nii.gz"))
    for index, path in enumerate(images[:5]):
        data = np.asarray(nib.load(str(path)).dataobj)[:, :40, :24].astype(np.float32)
        write_nifti(folder / f"scan{index}.nii.gz", data)
    return folder


def job_ids(output: Path) -> dict[str, str]:
    """Each job's name and the Slurm id it was last submitted as."""
    records = json.loads((output / SLURM_FOLDER / JOBS_FILE).read_text())
    return {name: record["job_id"] for name, record in records.items()}


def show(request, text: str) -> None:
    """A line in the test log itself, past pytest's capture (the CI log shows the job ids)."""
    with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print(text, flush=True)


def summary_rows(output: Path) -> list[dict[str, str]]:
    with (output / "summary.csv").open() as handle:
        return list(csv.DictReader(handle))


def masks(output: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(str(p)).dataobj) for p in output.glob("*.nii.gz")}


def predict_args(model: Path, scans: Path, output: Path) -> list:
    return ["predict", "--model", model, "-i", scans, "-o", output, "--no-tta", "--device", "cpu"]


def test_sharded_predict_gives_the_masks_of_a_local_run(
    slurm_cluster, mri_run: Path, scans: Path, runner, tmp_path: Path, request
):
    local, cluster = tmp_path / "local", tmp_path / "cluster"
    result = invoke(runner, *predict_args(mri_run, scans, local), "--threads", "1")
    assert result.exit_code == 0, result.output
    sharded = [*predict_args(mri_run, scans, cluster), "--launcher", "slurm", "--shards", "2"]
    result = invoke(runner, *sharded, *ONE_CPU)
    assert result.exit_code == 0, result.output
    show(request, f"predict --launcher slurm: Slurm jobs {job_ids(cluster)}")
    assert set(job_ids(cluster)) == {"shard-0-of-2", "shard-1-of-2"}
    expected, got = masks(local), masks(cluster)
    assert sorted(got) == sorted(expected) and len(got) == 5
    for name, mask in expected.items():
        np.testing.assert_array_equal(got[name], mask)
    ignored = {"seconds", "output"}  # the time taken, and the folder written into

    def kept(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in row.items() if k not in ignored} for row in rows]

    assert kept(summary_rows(cluster)) == kept(summary_rows(local))
    page = (cluster / "report.html").read_text()
    assert all(f"scan{index}" in page for index in range(5))
    logs = list((cluster / SLURM_FOLDER).glob("*/*_log.out"))
    assert len(logs) == 2 and all("medgraft predict --shard" in log.read_text() for log in logs)


def test_a_cancelled_task_is_submitted_again_and_nothing_is_lost_or_doubled(
    slurm_cluster, mri_run: Path, scans: Path, runner, tmp_path: Path, request
):
    output = tmp_path / "out"
    command = [*predict_args(mri_run, scans, output), "--launcher", "slurm", "--shards", "2"]
    result = invoke(runner, *command, *ONE_CPU, "--no-wait")
    assert result.exit_code == 0, result.output
    first = job_ids(output)
    assert all(job_id in result.output for job_id in first.values())  # printed
    slurm_cluster.client("scancel", first["shard-1-of-2"])
    result = invoke(runner, *command, *ONE_CPU)
    assert result.exit_code == 0, result.output
    second = job_ids(output)
    show(request, f"cancelled Slurm job {first['shard-1-of-2']}; jobs now {second}")
    assert second["shard-0-of-2"] == first["shard-0-of-2"]  # waited for, not submitted again
    assert second["shard-1-of-2"] != first["shard-1-of-2"]  # the cancelled one, submitted again
    cases = [row["case_id"] for row in summary_rows(output)]
    assert sorted(cases) == [f"scan{index}" for index in range(5)]
    assert len(list(output.glob("*.nii.gz"))) == 5


def test_a_failing_job_is_reported_with_its_log_and_a_non_zero_exit(
    slurm_cluster, mri_run: Path, scans: Path, runner, tmp_path: Path, request
):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("scan0.nii.gz", "scan1.nii.gz"):
        (inputs / name).write_bytes((scans / name).read_bytes())
    (inputs / "scan1.nii.gz").write_bytes(b"not a NIfTI file")  # corrupt: its shard fails
    output = tmp_path / "out"
    command = [*predict_args(mri_run, inputs, output), "--launcher", "slurm", "--shards", "2"]
    result = invoke(runner, *command, *ONE_CPU)
    assert result.exit_code == 1, result.output
    failed = job_ids(output)["shard-1-of-2"]
    show(request, f"failing Slurm job {failed}")
    text = " ".join(result.output.split())
    log = output / SLURM_FOLDER / failed / f"{failed}_0_log.out"
    assert f"job {failed} (shard-1-of-2) FAILED" in text and f"log: {log}" in text
    assert "scan1.nii.gz" in log.read_text()  # the log says which case broke it
    statuses = {row["case_id"]: row["status"] for row in summary_rows(output)}
    assert statuses == {"scan0": "ok", "scan1": "failed"}


def test_a_study_on_slurm_scores_each_case_as_the_local_study(
    slurm_cluster, micro_msd: Path, runner, tmp_path: Path, request
):
    grid = ["--inits", "none", "--fractions", "1.0", "--seeds", "2", "--epochs", "1",
            "--val-fraction", "0.25", "--offline", "--device", "cpu"]  # fmt: skip

    def study(output: Path, *launch: str) -> list[dict[str, str]]:
        result = invoke(runner, "study", "--data", micro_msd, "--output", output, *grid, *launch)
        assert result.exit_code == 0, result.output
        with (output / "cases.csv").open() as handle:
            return list(csv.DictReader(handle))

    local = study(tmp_path / "local", "--threads", "1")
    cluster = study(tmp_path / "cluster", "--launcher", "slurm", *ONE_CPU)
    show(request, f"study --launcher slurm: Slurm jobs {job_ids(tmp_path / 'cluster')}")
    assert len(local) == 4  # 2 seeds x 1 validation case x 2 classes
    for mine, theirs in zip(cluster, local, strict=True):
        assert mine.keys() == theirs.keys()
        for key, value in theirs.items():
            if key in ("dice", "hd95"):
                assert float(mine[key]) == pytest.approx(float(value), abs=1e-6, nan_ok=True)
            else:
                assert mine[key] == value


def test_the_documented_multi_node_training_runs_on_one_node(
    slurm_cluster, micro_msd: Path, tmp_path: Path, request
):
    """``docs/train_multinode.sbatch``: torchrun under srun, here on 1 node x 1 process."""
    run, log = tmp_path / "run", tmp_path / "train-%j.out"
    submitted = subprocess.run(
        ["sbatch", "--wait", "--nodes", "1", "--cpus-per-task", "1", "--output", str(log),
         str(REPOSITORY / "docs" / "train_multinode.sbatch"), "--data", str(micro_msd),
         "--output", str(run), "--recipe", "none", "--epochs", "1", "--batch-size", "16",
         "--offline", "--device", "cpu"],
        env={
            **slurm_cluster.env, "RDZV_PORT": str(free_port()), "NPROC_PER_NODE": "1",
            # as a user runs it: from the environment medgraft is installed in (its torchrun)
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{slurm_cluster.env['PATH']}",
        },
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    show(request, f"multi-node training script: {submitted.stdout.strip()}")
    logs = "\n".join(path.read_text() for path in tmp_path.glob("train-*.out"))
    assert submitted.returncode == 0, submitted.stderr + logs
    assert (run / "last.pt").is_file()
    with (run / "metrics.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 1
