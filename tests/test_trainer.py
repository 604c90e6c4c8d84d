"""The Trainer: preprocessing, sampling, resume, folds, config, logs, hooks and DDP."""

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import invoke, run_torchrun, write_nifti

import medgraft.training.handlers as trainer_module
from medgraft.config.loading import options_sha256, resolve_options
from medgraft.config.schema import AugmentOptions, TrainConfig
from medgraft.data.cases import load_cases
from medgraft.data.discovery import discover_dataset
from medgraft.data.sampling import BalancedSampler
from medgraft.data.splits import make_folds
from medgraft.data.transforms import (
    Preprocessing,
    apply_case_transforms,
    case_transforms,
    geometry_transforms,
)
from medgraft.errors import MedgraftError
from medgraft.models.checkpoint import load_checkpoint
from medgraft.training.events import Event
from medgraft.training.trainer import Trainer
from medgraft.training.trainer import run_training as train
from medgraft.training.trainers import TRAINERS


def test_volumes_are_reoriented_to_ras_and_resampled_in_plane(tmp_path: Path):
    data = np.random.default_rng(0).random((20, 16, 6)).astype(np.float32)
    write_nifti(tmp_path / "lps.nii.gz", data, np.diag([-0.5, -0.5, 3.0, 1.0]))
    write_nifti(
        tmp_path / "lbl.nii.gz", (data > 0.5).astype(np.uint8), np.diag([-0.5, -0.5, 3.0, 1.0])
    )
    prep = Preprocessing(volumetric=True, orientation="RAS", spacing=(1.0, 1.0, 0.0))
    out = apply_case_transforms(
        case_transforms(prep, with_label=True, allowed_labels=[0, 1]),
        {"image": str(tmp_path / "lps.nii.gz"), "label": str(tmp_path / "lbl.nii.gz")},
    )
    assert nib.aff2axcodes(out["image"].affine.numpy()) == ("R", "A", "S")
    assert tuple(out["image"].shape) == (1, 10, 8, 6)  # 0.5 mm -> 1 mm in-plane, 3 mm kept
    np.testing.assert_allclose(out["image"].pixdim.numpy(), [1.0, 1.0, 3.0])
    assert out["label"].shape == out["image"].shape
    assert set(torch.unique(out["label"]).tolist()) <= {0, 1}  # nearest for labels


def test_ct_window_clips_then_scales(tmp_path: Path):
    write_nifti(
        tmp_path / "ct.nii.gz", np.linspace(-1000, 1000, 64).reshape(4, 4, 4).astype(np.float32)
    )
    prep = Preprocessing(volumetric=True, intensity="window", window=(-100.0, 300.0))
    image = case_transforms(prep, with_label=False)({"image": str(tmp_path / "ct.nii.gz")})["image"]
    values = image.flatten()
    assert float(values.min()) == 0.0 and float(values.max()) == 1.0
    raw = np.linspace(-1000, 1000, 64)
    inside = (raw > -100) & (raw < 300)
    np.testing.assert_allclose(values.numpy()[inside], (raw[inside] + 100) / 400, atol=1e-5)


def test_balanced_sampler_ratio_determinism_and_ranks():
    foreground = [i % 10 == 0 for i in range(1000)]  # 10% of slices hold foreground
    sampler = BalancedSampler(foreground, ratio=0.5, seed=3)
    sampler.set_epoch(1)
    drawn = list(sampler)
    share = np.mean([foreground[i] for i in drawn])
    assert 0.45 < share < 0.55 and len(drawn) == 1000
    assert list(sampler) == drawn
    sampler.set_epoch(2)
    assert list(sampler) != drawn
    ranks = [BalancedSampler(foreground, 0.5, 3, rank=r, world_size=2) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(1)
    assert sorted(list(ranks[0]) + list(ranks[1])) == sorted(drawn)
    uniform = BalancedSampler(foreground, ratio=-1, seed=0)
    assert sorted(uniform) == list(range(1000))


def test_folds_are_reproducible_and_partition_the_cases():
    ids = [f"case{i}" for i in range(11)]
    folds = make_folds(ids, 5, seed=7)
    assert folds == make_folds(list(reversed(ids)), 5, seed=7)
    assert sorted(c for f in folds for c in f["val"]) == sorted(ids)
    for f in folds:
        assert not set(f["train"]) & set(f["val"]) and len(f["train"]) + len(f["val"]) == 11
    assert make_folds(ids, 5, seed=8) != folds


FAST = {"epochs": 2, "batch_size": 16, "val_fraction": 0.25, "seed": 5, "slices": 3}


@pytest.fixture(scope="module")
def straight_run(micro_msd: Path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("straight") / "run"
    train(TrainConfig(data=str(micro_msd), output=str(run), **FAST))
    return run


@pytest.mark.slow
def test_a_run_without_validation_cases_says_so_instead_of_printing_nan(
    micro_msd: Path, tmp_path: Path, capsys
):
    run = tmp_path / "run"
    config = FAST | {"epochs": 1, "val_fraction": 0.0}
    train(TrainConfig(data=str(micro_msd), output=str(run), **config))
    printed = capsys.readouterr().err  # the console writes to stderr
    assert "epoch 1: loss" in printed and "no validation cases" in printed
    assert "nan" not in printed and "*best*" not in printed
    assert load_checkpoint(run / "best.pt").epoch == 1


@pytest.mark.slow
def test_resume_equals_an_uninterrupted_run(straight_run: Path, micro_msd: Path, tmp_path: Path):
    run2 = tmp_path / "resumed2"
    config = TrainConfig(data=str(micro_msd), output=str(run2), **FAST)
    _train_until(config, stop_after_epoch=1)
    train(TrainConfig(data=str(micro_msd), output=str(run2), resume=True, **FAST))
    resumed = load_checkpoint(run2 / "last.pt")
    straight = load_checkpoint(straight_run / "last.pt")
    assert resumed.epoch == straight.epoch == 2
    torch.testing.assert_close(resumed.model_state, straight.model_state, rtol=1e-4, atol=1e-5)
    rows = list(csv.DictReader((run2 / "metrics.csv").open()))
    straight_rows = list(csv.DictReader((straight_run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[-1]["val_mean_dice"]) == pytest.approx(
        float(straight_rows[-1]["val_mean_dice"]), abs=1e-3
    )
    case_rows = list(csv.DictReader((run2 / "val_cases.csv").open()))
    per_epoch = len(json.loads((run2 / "splits.json").read_text())["val"]) * 2  # x 2 classes
    assert [r["epoch"] for r in case_rows] == ["1"] * per_epoch + ["2"] * per_epoch


def _train_until(config: TrainConfig, stop_after_epoch: int) -> None:
    """Train, then stop the way a killed job does: right after an epoch's checkpoint."""
    real_save = trainer_module.save_checkpoint

    def save_then_die(checkpoint, path):
        real_save(checkpoint, path)
        if path.name == "last.pt" and checkpoint.epoch == stop_after_epoch:
            raise KeyboardInterrupt

    trainer_module.save_checkpoint = save_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            train(config)
    finally:
        trainer_module.save_checkpoint = real_save


@pytest.mark.slow
def test_run_folder_logs(straight_run: Path):
    rows = list(csv.DictReader((straight_run / "metrics.csv").open()))
    assert {"val_dice_Anterior", "val_hd95_Posterior", "samples_per_s", "lr"} <= set(rows[0])
    assert float(rows[0]["val_hd95_Anterior"]) > 0
    # per case and class; metrics.csv's means are their means
    cases = list(csv.DictReader((straight_run / "val_cases.csv").open()))
    validated = json.loads((straight_run / "splits.json").read_text())["val"]
    assert len(cases) == 2 * len(validated) * 2  # epochs x validation cases x classes
    assert {r["case"] for r in cases} == set(validated)
    last = [r for r in cases if r["epoch"] == "2" and r["class"] == "Anterior"]
    mean = sum(float(r["dice"]) for r in last) / len(last)
    assert mean == pytest.approx(float(rows[-1]["val_dice_Anterior"]), abs=1e-5)
    assert list((straight_run / "tensorboard").glob("events.out.tfevents.*"))
    assert (straight_run / "curves.png").stat().st_size > 1000
    resolved = json.loads((straight_run / "config.json").read_text())
    assert resolved["preprocessing"]["spacing"] == [1.0, 1.0, 0.0]  # median in-plane, kept z
    assert resolved["train_config"]["epochs"] == 2
    saved = TrainConfig(**resolve_options([resolved["train_config"]]))
    assert resolved["options_sha256"] == options_sha256(saved)
    assert (straight_run / "config.yaml").is_file()
    checkpoint = load_checkpoint(straight_run / "best.pt")
    assert checkpoint.train_config == resolved["train_config"]


@pytest.mark.slow
def test_config_file_with_flag_override(micro_msd: Path, tmp_path: Path, runner):
    (tmp_path / "exp.yaml").write_text(
        f"data: {micro_msd}\noutput: {tmp_path / 'cv'}\nepochs: 5\nbatch_size: 16\n"
        "folds: 2\nval_fraction: 0.25\naugment:\n  strength: 0.5\n"
    )
    result = invoke(
        runner,
        "train",
        "--recipe",
        "none",
        "--config",
        tmp_path / "exp.yaml",
        "--epochs",
        "1",
        "--fold",
        "all",
    )
    assert result.exit_code == 0, result.output
    splits = json.loads((tmp_path / "cv" / "splits.json").read_text())
    assert len(splits["folds"]) == 2
    for fold in (0, 1):
        resolved = json.loads((tmp_path / "cv" / f"fold_{fold}" / "config.json").read_text())
        assert resolved["train_config"]["epochs"] == 1  # the flag beat the file's 5
        assert resolved["train_config"]["augment"]["strength"] == 0.5
        assert resolved["val_cases"] == splits["folds"][fold]["val"]


@pytest.mark.slow
def test_ddp_two_gloo_processes(micro_msd: Path, tmp_path: Path):
    run = tmp_path / "ddp"
    proc = run_torchrun(
        29532,
        "train",
        "--recipe",
        "none",
        "--data",
        micro_msd,
        "--output",
        run,
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--val-fraction",
        "0.25",
        "--device",
        "cpu",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    resolved = json.loads((run / "config.json").read_text())
    assert resolved["world_size"] == 2
    assert load_checkpoint(run / "last.pt").epoch == 1
    assert len(list(csv.DictReader((run / "metrics.csv").open()))) == 1


def test_disk_cache_is_written_once_and_reused(micro_msd: Path, tmp_path: Path):
    records = discover_dataset(micro_msd).training[:2]
    geometry = geometry_transforms(
        Preprocessing(volumetric=True), with_label=True, allowed_labels=[0, 1, 2]
    )
    first = load_cases(records, geometry, cache_dir=str(tmp_path / "cache"))
    cached = sorted((tmp_path / "cache").glob("*.pt"))
    assert len(cached) == 2
    stamps = [p.stat().st_mtime_ns for p in cached]
    again = load_cases(records, geometry, cache_dir=str(tmp_path / "cache"))
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "cache").glob("*.pt"))] == stamps
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a.image, b.image) and torch.equal(a.label, b.label)


class CountingHandler:
    """A handler a variant attaches: records the events it sees."""

    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    def attach(self, trainer: Trainer) -> None:
        trainer.add_event_handler(Event.ITERATION_COMPLETED, lambda t: self.seen.append("step"))
        trainer.add_event_handler(Event.EPOCH_COMPLETED, self.epoch_completed)
        trainer.add_event_handler(Event.FIT_COMPLETED, lambda t: self.seen.append("done"))

    def epoch_completed(self, trainer: Trainer, result) -> None:
        self.seen.append(f"epoch {result.epoch}: {result.mean_dice:.3f}")


class CountingTrainer(Trainer):
    """A variant that overrides one hook and attaches one handler, as a contributor would."""

    seen: ClassVar[list[str]] = []

    def build_loss(self):
        CountingTrainer.seen.append(f"loss {self.config.loss}")
        return super().build_loss()

    def handlers(self):
        return [*super().handlers(), CountingHandler(CountingTrainer.seen)]


@pytest.mark.slow
def test_a_registered_trainer_variant_trains_with_the_trainer_flag(
    micro_msd: Path, tmp_path: Path, runner
):
    TRAINERS.register("counting")(CountingTrainer)
    try:
        result = invoke(
            runner, "train", "--recipe", "none",
            "--data", micro_msd, "--output", tmp_path / "run", "--epochs", "1",
            "--batch-size", "16", "--samples-per-epoch", "32", "--val-fraction", "0.25",
            "--trainer", "counting",
        )  # fmt: skip
    finally:
        TRAINERS.remove("counting")
    assert result.exit_code == 0, result.output
    seen = CountingTrainer.seen
    assert seen[0] == "loss dice_ce" and seen.count("step") == 2 and seen[-1] == "done"
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert seen[-2] == f"epoch 1: {best.val_dice:.3f}"
    assert best.train_config["trainer"] == "counting"
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train_config"]["trainer"] == "counting"
    assert "unknown trainer --trainer 'counting'" in str(
        invoke(
            runner,
            "train",
            "--recipe",
            "none",
            "--data",
            "d",
            "--output",
            "o",
            "--trainer",
            "counting",
        ).exception
    )


@pytest.mark.slow
def test_resume_with_more_epochs_extends_a_finished_run(micro_msd: Path, tmp_path: Path, runner):
    run = tmp_path / "run"
    args = ["train", "--recipe", "none", "--data", micro_msd, "--output", run, "--batch-size", "16",
            "--val-fraction", "0.25", "--samples-per-epoch", "32"]  # fmt: skip
    assert invoke(runner, *args, "--epochs", "1").exit_code == 0
    finished = invoke(runner, *args, "--resume")  # the saved run's 1 epoch: nothing to do
    assert finished.exit_code == 0, finished.output
    assert "all 1 epochs were already trained" in finished.output
    assert len(list(csv.DictReader((run / "metrics.csv").open()))) == 1
    changed = invoke(runner, *args, "--resume", "--lr", "0.5")
    assert changed.exit_code == 1 and "lr differs" in str(changed.exception)
    extended = invoke(runner, *args, "--resume", "--epochs", "2")
    assert extended.exit_code == 0, extended.output
    assert "run extended from 1 to 2 epochs" in (run / "run.log").read_text()
    assert [r["epoch"] for r in csv.DictReader((run / "metrics.csv").open())] == ["1", "2"]
    state = load_checkpoint(run / "last.pt")
    assert state.epoch == 2 and state.train_config["epochs"] == 2
    shorter = invoke(runner, *args, "--resume", "--epochs", "1")
    assert shorter.exit_code == 1 and "already trained 2 epochs" in str(shorter.exception)


@pytest.mark.slow
def test_a_coronal_run_samples_coronal_slices_and_records_its_view(micro_msd: Path, tmp_path: Path):
    config = TrainConfig(
        data=str(micro_msd), output=str(tmp_path / "run"), slice_axis="coronal", **FAST
    )
    trainer = Trainer(replace(config, epochs=1))
    result = trainer.fit()
    coronal_slices = sum(case.image.shape[2] for case in trainer.train_cases)
    assert len(trainer.dataset) == coronal_slices  # (C, X, Y, Z): Y is anterior-posterior
    assert coronal_slices != sum(case.image.shape[3] for case in trainer.train_cases)
    assert load_checkpoint(result.run_dir / "last.pt").inputs.slice_axis == 1


def test_2d_patches_crop_image_and_mask_alike_and_predict_whole_images(
    tiny_2d: Path, tmp_path: Path
):
    config = TrainConfig(
        data=str(tiny_2d), output=str(tmp_path / "run"), epochs=1, batch_size=4, image_size=64,
        patch_size=32, val_fraction=0.25, offline=True, augment=AugmentOptions(enabled=False),
    )  # fmt: skip
    trainer = Trainer(config)
    result = trainer.fit()
    crops = [trainer.dataset[i] for i in range(len(trainer.dataset))]
    assert {tuple(c["image"].shape[-2:]) for c in crops} == {(32, 32)}
    for case, crop in zip(trainer.train_cases, crops, strict=True):
        image, label = torch.as_tensor(case.image), torch.as_tensor(case.label)
        [(top, left)] = [  # where the image crop came from: its mask must come from there too
            (y, x)
            for y in range(33)
            for x in range(33)
            if torch.equal(image[:, y : y + 32, x : x + 32], torch.as_tensor(crop["image"]))
        ]
        assert torch.equal(
            label[:, top : top + 32, left : left + 32], torch.as_tensor(crop["label"])
        )
    assert any(bool((c["label"] > 0).any()) and bool((c["label"] == 0).any()) for c in crops)
    assert load_checkpoint(result.run_dir / "last.pt").inputs.image_size == 64


def test_patch_size_is_checked_against_the_image_and_the_data(micro_msd: Path, tmp_path: Path):
    with pytest.raises(MedgraftError, match="--patch-size 96 is larger than --image-size 64"):
        TrainConfig(data="d", output="o", image_size=64, patch_size=96)
    config = TrainConfig(data=str(micro_msd), output=str(tmp_path / "run"), patch_size=32, **FAST)
    with pytest.raises(MedgraftError, match="--patch-size crops 2D images"):
        Trainer(config).fit()
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


@pytest.mark.slow
def test_the_cpu_budget_trainer_keeps_snapshots_and_its_clock(micro_msd: Path, tmp_path: Path):
    """The learning-speed trainer: no validation, a snapshot at each CPU-minute point (the
    final model stands for points the schedule ended before), the clock saved for resume."""
    run = tmp_path / "run"
    config = TrainConfig(
        data=str(micro_msd), output=str(run), trainer="cpu-budget", cpu_budget_minutes="30,60",
        samples_per_epoch=32, **{**FAST, "epochs": 1},
    )  # fmt: skip
    result = train(config)
    assert result.val_cases == []
    clock = json.loads((run / "snapshots" / "clock.json").read_text())
    assert clock["iterations"] == 2 and 0 < clock["cpu_seconds"] < 30 * 60
    assert not (run / "snapshots" / "cpu_030min.pt").exists()  # never reached
    final = load_checkpoint(run / "snapshots" / "cpu_060min.pt")
    assert final.epoch == 1 and final.train_config["trainer"] == "cpu-budget"
    with pytest.raises(MedgraftError, match="needs --cpu-budget-minutes"):
        train(replace(config, cpu_budget_minutes=None, output=str(tmp_path / "x")))


@pytest.mark.slow
def test_val_every_validates_at_its_cadence_and_the_last_epoch_and_resumes_exactly(
    micro_msd: Path, tmp_path: Path
):
    """--val-every 2 over 3 epochs validates epochs 2 and 3: epoch 1's row has blank scores
    and no per-case rows, curves plot the validated epochs, best.pt is a validated epoch; a
    run killed after the unvalidated epoch 1 resumes to the uninterrupted run's model."""
    cadence = FAST | {"epochs": 3, "samples_per_epoch": 32, "val_every": 2}
    straight = tmp_path / "straight"
    result = train(TrainConfig(data=str(micro_msd), output=str(straight), **cadence))
    rows = list(csv.DictReader((straight / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    validation = [c for c in rows[0] if c.startswith("val_")]
    assert all(rows[0][c] == "" for c in validation) and float(rows[0]["train_loss"]) > 0
    assert all(rows[i][c] != "" for i in (1, 2) for c in validation)
    cases = list(csv.DictReader((straight / "val_cases.csv").open()))
    assert sorted({r["epoch"] for r in cases}) == ["2", "3"]
    assert result.best_epoch in (2, 3)
    assert load_checkpoint(straight / "best.pt").epoch == result.best_epoch
    assert (straight / "curves.png").stat().st_size > 1000
    resumed = tmp_path / "resumed"
    _train_until(TrainConfig(data=str(micro_msd), output=str(resumed), **cadence), 1)
    assert load_checkpoint(resumed / "last.pt").epoch == 1 and not (resumed / "best.pt").exists()
    train(TrainConfig(data=str(micro_msd), output=str(resumed), resume=True, **cadence))
    final, expected = load_checkpoint(resumed / "last.pt"), load_checkpoint(straight / "last.pt")
    torch.testing.assert_close(final.model_state, expected.model_state, rtol=1e-4, atol=1e-5)
    resumed_rows = list(csv.DictReader((resumed / "metrics.csv").open()))
    assert [r["val_mean_dice"] == "" for r in resumed_rows] == [True, False, False]
    resumed_cases = list(csv.DictReader((resumed / "val_cases.csv").open()))
    assert [r["epoch"] for r in resumed_cases] == [r["epoch"] for r in cases]
