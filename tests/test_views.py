"""Multi-view runs: ``--views`` trains one 2.5D model per view, each a run of its own in
``<output>/<view>/``, and ``predict --model <output>`` averages every model under a folder of
views or folds."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from conftest import invoke

from medgraft.config.loading import options_sha256, save_config
from medgraft.config.resolve import train_configs
from medgraft.config.schema import PredictOptions, TrainConfig
from medgraft.errors import MedgraftError
from medgraft.inference.batch import load_predictor
from medgraft.models.checkpoint import ensemble_checkpoints


def test_views_give_one_run_per_fold_and_view():
    flags = {"data": "d", "output": "out", "views": "axial, sagittal", "folds": 3}
    configs = train_configs(flags, fold="all")
    assert [(c.fold, c.slice_axis, c.output) for c in configs] == [
        (fold, view, str(Path("out") / view)) for fold in range(3) for view in ("axial", "sagittal")
    ]


def test_a_view_of_a_set_is_the_same_run_as_that_view_alone():
    alone = train_configs({"data": "d", "output": "out/coronal", "slice_axis": "coronal"})
    in_set = train_configs({"data": "d", "output": "out", "views": "axial,coronal"})
    assert options_sha256(in_set[1]) == options_sha256(alone[0])
    assert options_sha256(in_set[0]) != options_sha256(in_set[1])
    [single] = train_configs({"data": "d", "output": "out/coronal", "views": "coronal"})
    assert (single.output, single.slice_axis) == ("out/coronal", "coronal")
    assert options_sha256(single) == options_sha256(alone[0])


def _started(run: Path, **options) -> None:
    """A run folder as training leaves it once set up: its saved options."""
    run.mkdir(parents=True)
    save_config(TrainConfig(data="d", output=str(run), **options), run / "config.yaml")


def test_resuming_a_set_starts_the_runs_never_started_with_the_started_ones_options(
    tmp_path: Path,
):
    flags = {"data": "d", "output": str(tmp_path), "views": "axial,coronal", "resume": True}
    assert [c.resume for c in train_configs(flags)] == [True, True]  # none began: reported
    _started(tmp_path / "axial", views="axial,coronal", epochs=7, lr=0.01, encoder="resnet18")
    axial, coronal = train_configs(flags)
    assert axial.resume and not coronal.resume
    assert (coronal.epochs, coronal.lr, coronal.encoder) == (7, 0.01, "resnet18")
    assert (coronal.slice_axis, coronal.output) == ("coronal", str(tmp_path / "coronal"))


def test_a_view_trained_alone_joins_a_set_on_resume(tmp_path: Path):
    _started(tmp_path / "coronal", slice_axis="coronal", epochs=4)
    flags = {"data": "d", "output": str(tmp_path), "views": "axial,coronal", "resume": True}
    axial, coronal = train_configs(flags)
    assert coronal.resume and (coronal.slice_axis, coronal.epochs) == ("coronal", 4)
    assert not axial.resume and (axial.slice_axis, axial.epochs) == ("axial", 4)


def test_a_started_run_without_last_pt_is_resumed_not_retrained(tmp_path: Path):
    """Its best.pt must not be overwritten by a fresh start: the trainer reports the missing
    last.pt instead."""
    _started(tmp_path / "axial", views="axial,coronal")
    (tmp_path / "axial" / "best.pt").touch()
    flags = {"data": "d", "output": str(tmp_path), "views": "axial,coronal", "resume": True}
    assert train_configs(flags)[0].resume


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"views": "axial,axial"}, "views lists a view twice"),
        ({"views": "axial,oblique"}, r"views must be one of .*not 'oblique'"),
        ({"views": "axial,coronal", "slice_axis": "coronal"}, "leave out --slice-axis"),
    ],
)
def test_wrong_views_are_refused_by_name(flags: dict, message: str):
    with pytest.raises(MedgraftError, match=message):
        train_configs({"data": "d", "output": "out", **flags})


def test_the_recipes_views_and_a_typed_slice_axis_name_the_one_view_flag():
    with pytest.raises(MedgraftError, match="for one view pass --views coronal"):
        train_configs({"data": "d", "output": "out", "slice_axis": "coronal"}, recipe="mri-2.5d")
    [coronal] = train_configs({"data": "d", "output": "out", "views": "coronal"}, recipe="mri-2.5d")
    assert (coronal.slice_axis, coronal.output) == ("coronal", "out")


def test_a_folder_of_views_and_folds_means_all_their_models(tmp_path: Path):
    for part in ("axial/fold_0", "axial/fold_1", "coronal/fold_0", "notes", "runs-old"):
        (tmp_path / part).mkdir(parents=True)
    for part in ("axial/fold_0", "axial/fold_1", "coronal/fold_0", "runs-old"):
        (tmp_path / part / "best.pt").touch()
        (tmp_path / part / "last.pt").touch()
    members = ("axial/fold_0", "axial/fold_1", "coronal/fold_0")
    assert ensemble_checkpoints(tmp_path) == [tmp_path / p / "last.pt" for p in members]
    assert ensemble_checkpoints(tmp_path, "best") == [tmp_path / p / "best.pt" for p in members]
    assert ensemble_checkpoints(tmp_path / "axial" / "fold_1") == [
        tmp_path / "axial/fold_1/last.pt"
    ]
    with pytest.raises(MedgraftError, match="notes: checkpoint not found"):
        ensemble_checkpoints(tmp_path / "notes")
    (tmp_path / "fold_0").mkdir()
    with pytest.raises(MedgraftError, match="holds both fold_N/ and view folders"):
        ensemble_checkpoints(tmp_path)


def test_folds_are_ensembled_in_numeric_order(tmp_path: Path):
    for fold in (10, 2, 0):
        (tmp_path / f"fold_{fold}").mkdir()
        (tmp_path / f"fold_{fold}" / "last.pt").touch()
    assert [p.parent.name for p in ensemble_checkpoints(tmp_path)] == [
        "fold_0", "fold_2", "fold_10"
    ]  # fmt: skip


@pytest.mark.slow
def test_views_train_and_predict_as_one_ensemble(micro_msd: Path, runner, tmp_path: Path):
    run = tmp_path / "run"
    common = ["--epochs", "1", "--batch-size", "16", "--val-fraction", "0.25"]
    result = invoke(
        runner, "train", "--recipe", "none",
        "--data", micro_msd, "--output", run, "--views", "axial,sagittal",
        *common,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    shutil.rmtree(run / "sagittal")  # as if killed before the second view started
    resumed = invoke(
        runner, "train", "--recipe", "none",
        "--data", micro_msd, "--output", run, "--views", "axial,sagittal",
        *common[2:], "--epochs", "2", "--resume",
    )  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    assert "run extended from 1 to 2 epochs" in (run / "axial" / "run.log").read_text()
    with (run / "sagittal" / "metrics.csv").open() as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2"]
    predictor = load_predictor([run], PredictOptions())
    assert predictor.slice_axes == [2, 0]  # axial then sagittal, in RAS
    masks = tmp_path / "masks"
    image = next((micro_msd / "imagesTr").glob("*.nii.gz"))
    predicted = invoke(runner, "predict", "--model", run, "-i", image, "-o", masks)
    assert predicted.exit_code == 0, predicted.output
    assert "ensemble of 2 models" in predicted.output
    assert (masks / image.name).is_file()


def test_views_are_refused_for_2d_images(tiny_2d: Path, runner, tmp_path: Path):
    result = invoke(
        runner, "train", "--recipe", "none",
        "--data", tiny_2d, "--output", tmp_path / "run", "--views",
        "axial,coronal",
    )  # fmt: skip
    assert result.exit_code != 0
    assert "views 'axial,coronal' (from --views" in str(result.exception) + result.output
    assert "need volumes" in str(result.exception) + result.output
    assert not (tmp_path / "run" / "axial").exists()
