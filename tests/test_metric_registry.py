"""A metric is one registered function: ``evaluate``'s CSV and table, and (when it declares
itself per-epoch) a training run's ``metrics.csv`` and ``val_cases.csv`` carry it, with no
other edit."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import invoke

from medgraft.evaluation.metrics import METRICS, ScoringContext, register_metric


def voxel_error(pred, truth, context: ScoringContext) -> list[float]:
    """Share of the case's voxels on the wrong side of each class's border."""
    return [
        float(((pred == value) != (truth == value)).float().mean())
        for value in range(1, context.num_classes)
    ]


@pytest.fixture
def registered_voxel_error():
    register_metric("voxel_error", title="Voxel error", per_epoch=True)(voxel_error)
    yield
    METRICS.remove("voxel_error")


def test_evaluate_writes_and_shows_a_registered_metric(
    registered_voxel_error, runner, tmp_path: Path
) -> None:
    truth = np.zeros((8, 8, 4), dtype=np.uint8)
    truth[2:6, 2:6, 1:3] = 1
    pred = np.zeros_like(truth)
    pred[2:6, 2:5, 1:3] = 1  # 8 of the 256 voxels wrong
    for folder, mask in (("truth", truth), ("pred", pred)):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(mask, np.eye(4)), str(tmp_path / folder / "case.nii.gz"))
    result = invoke(
        runner, "evaluate", "--pred", tmp_path / "pred", "--truth", tmp_path / "truth",
        "--output", tmp_path / "scores.csv",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Voxel" in result.output  # the table's column title (rich may wrap the rest)
    [row] = [r for r in csv.DictReader((tmp_path / "scores.csv").open()) if r["case_id"] == "case"]
    assert float(row["voxel_error_label_1"]) == pytest.approx(8 / 256, abs=1e-5)
    assert float(row["dice_label_1"]) == pytest.approx(2 * 24 / (32 + 24), abs=1e-5)


@pytest.mark.slow
def test_a_per_epoch_metric_reaches_the_training_logs(
    registered_voxel_error, micro_msd: Path, runner, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    result = invoke(
        runner, "train", "--recipe", "none", "--data", micro_msd, "--output", run, "--epochs", "1",
        "--batch-size", "16", "--samples-per-epoch", "32", "--val-fraction", "0.25",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    cases = list(csv.DictReader((run / "val_cases.csv").open()))
    assert cases and all(0 <= float(r["voxel_error"]) <= 1 for r in cases)
    assert {"dice", "hd95", "voxel_error"} <= set(cases[0]) and "nsd" not in cases[0]
    [epoch] = list(csv.DictReader((run / "metrics.csv").open()))
    assert {"val_voxel_error_Anterior", "val_voxel_error_Posterior"} <= set(epoch)


@pytest.mark.slow
def test_val_metrics_asks_for_nsd_in_the_epoch_loop(micro_msd: Path, runner, tmp_path) -> None:
    run = tmp_path / "run"
    result = invoke(
        runner, "train", "--recipe", "none", "--data", micro_msd, "--output", run, "--epochs", "1",
        "--batch-size", "16", "--samples-per-epoch", "32", "--val-fraction", "0.25",
        "--val-metrics", "dice,nsd",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    cases = list(csv.DictReader((run / "val_cases.csv").open()))
    assert set(cases[0]) == {"epoch", "case", "class", "dice", "nsd"}
