"""``medgraft crossval --launcher``: the local launcher (the default) trains each fold here in
turn, its threads pinned; on a real one-node Slurm cluster (``slurm_cluster``) the folds train
as a job array and score each case as the local run, each fold's time recorded by its job."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import invoke
from test_crossval import crossval_args
from test_slurm import ONE_CPU, job_ids, show

from medgraft import crossval
from medgraft.config.schema import TrainConfig
from medgraft.errors import MedgraftError
from medgraft.files import read_csv
from medgraft.launchers import SLURM_FOLDER


def test_the_local_launcher_is_the_default_and_trains_here_in_turn(
    micro_msd: Path, runner, tmp_path: Path, monkeypatch
):
    trained: list[tuple[int, bool, int]] = []

    def stop_after_recording(config: TrainConfig) -> None:
        trained.append((config.fold, config.resume, torch.get_num_threads()))
        raise MedgraftError("stopped by the test")

    monkeypatch.setattr(crossval, "run_training", stop_after_recording)
    output = tmp_path / "cv"
    result = invoke(runner, *crossval_args(micro_msd, output))
    assert result.exit_code != 0 and "stopped by the test" in str(result.exception)
    assert trained == [(0, False, min(4, os.cpu_count() or 1))]  # in this process, pinned
    assert "fold 0: training in" in result.output
    assert not (output / SLURM_FOLDER).exists()
    flags = {"data": str(micro_msd), "epochs": 1, "batch_size": 16, "offline": True}
    plan = crossval.CrossvalPlan(output, flags, folds=2)
    [config] = plan.fold_configs()[0]
    job = crossval.TrainConfig(**crossval.load_saved_config(output / "fold_0" / crossval.JOB_FILE))
    assert crossval.options_sha256(job) == crossval.options_sha256(config)


@pytest.mark.slurm
@pytest.mark.slow
def test_a_crossval_on_slurm_scores_each_case_as_the_local_one(
    slurm_cluster, micro_msd: Path, runner, tmp_path: Path, request
):
    def cross_validate(output: Path, *launch: str):
        result = invoke(runner, *crossval_args(micro_msd, output, "--device", "cpu", *launch))
        assert result.exit_code == 0, result.output
        return result.output, read_csv(output / "cases.csv")

    _, local = cross_validate(tmp_path / "local", "--threads", "1")
    output, cluster = cross_validate(tmp_path / "cluster", "--launcher", "slurm", *ONE_CPU)
    ids = job_ids(tmp_path / "cluster")
    show(request, f"crossval --launcher slurm: Slurm jobs {ids}")
    assert set(ids) == {"fold_0", "fold_1"}
    assert all(job_id in output for job_id in ids.values())
    assert len(local) == 4 * 2  # each case once, per class
    for mine, theirs in zip(cluster, local, strict=True):
        assert mine.keys() == theirs.keys()
        for key, value in theirs.items():
            if key in ("fold", "case", "class"):
                assert mine[key] == value
            else:
                assert float(mine[key]) == pytest.approx(float(value), abs=1e-6, nan_ok=True)
    for row in read_csv(tmp_path / "cluster" / "folds.csv"):  # timed by the job itself
        assert float(row["seconds"]) > 0 and row["calls"] == "1"
