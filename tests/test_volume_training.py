"""3D models end to end: patches, resume, transfer, prediction, ensembles, DDP, study, bad input."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import invoke, run_torchrun, write_nifti
from test_trainer import _train_until

from medgraft.config.schema import AugmentOptions, TrainConfig
from medgraft.data.transforms import Preprocessing
from medgraft.errors import MedgraftError
from medgraft.inference.predictor import Predictor
from medgraft.models.checkpoint import Checkpoint, ModelInputs, load_checkpoint
from medgraft.models.registry import get_encoder
from medgraft.models.unet import architecture, build_segmenter
from medgraft.training.trainer import run_training

pytestmark = pytest.mark.slow

VOLUME = {"dims": 3, "epochs": 2, "batch_size": 2, "val_fraction": 0.25, "seed": 5}
AUGMENTED = AugmentOptions(strength=0.5, flips=False)


def volume_config(data: Path, output: Path, **changes) -> TrainConfig:
    return TrainConfig(
        data=str(data), output=str(output), augment=AUGMENTED, offline=True, **VOLUME | changes
    )


@pytest.fixture(scope="module")
def volume_run(micro_msd: Path, tmp_path_factory) -> Path:
    """Two epochs of the 3D ACS U-Net on four 48 x 48 x 16 cases (one validates)."""
    run = tmp_path_factory.mktemp("volume") / "run"
    run_training(volume_config(micro_msd, run))
    return run


def test_a_3d_run_trains_on_planned_patches_and_records_its_model(volume_run: Path):
    last = load_checkpoint(volume_run / "last.pt")
    assert last.architecture.dims == 3 and last.architecture.conversion == "acs"
    assert last.inputs.dims == 3 and last.inputs.patch == [48, 48, 16]  # the cases' shape
    assert last.architecture.in_channels == 1  # one modality: no 2.5D stack
    rows = list(csv.DictReader((volume_run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and float(rows[-1]["train_loss"]) > 0
    resolved = json.loads((volume_run / "config.json").read_text())
    assert resolved["weights_record"]["encoder"]["origin"].startswith("package:")


def test_a_resumed_3d_run_equals_an_uninterrupted_one(
    volume_run: Path, micro_msd: Path, tmp_path: Path
):
    run = tmp_path / "resumed"
    _train_until(volume_config(micro_msd, run), stop_after_epoch=1)
    run_training(volume_config(micro_msd, run, resume=True))
    resumed, straight = load_checkpoint(run / "last.pt"), load_checkpoint(volume_run / "last.pt")
    assert resumed.epoch == straight.epoch == 2
    torch.testing.assert_close(resumed.model_state, straight.model_state, rtol=1e-4, atol=1e-5)


def test_a_patch_larger_than_the_volumes_pads_them_and_transfer_keeps_the_frozen_encoder(
    volume_run: Path, micro_msd: Path, tmp_path: Path
):
    """Cases of 48 x 48 x 16 train on 64 x 64 x 32 patches (padded), starting from the earlier
    3D run with its encoder frozen for the one epoch: the encoder stays the source's."""
    run = tmp_path / "transfer"
    config = volume_config(
        micro_msd, run, volume_patch="64,64,32", epochs=1, init_from=str(volume_run),
        freeze_encoder_epochs=1,
    )  # fmt: skip
    run_training(config)
    trained, source = load_checkpoint(run / "last.pt"), load_checkpoint(volume_run / "last.pt")
    assert trained.inputs.patch == [64, 64, 32]
    encoder = [k for k in source.model_state if k.startswith("unet.encoder.") and "weight" in k]
    assert encoder
    for key in encoder:
        torch.testing.assert_close(trained.model_state[key], source.model_state[key])
    record = json.loads((run / "config.json").read_text())["weights_record"]["encoder"]
    assert record["origin"] == "init-from"


def test_predict_segments_volumes_of_any_size_on_their_own_grid(
    volume_run: Path, runner, tmp_path: Path
):
    """A volume larger than the patch in-plane and thinner than it: windows slide, pad and
    blend; the mask keeps the input's affine and shape."""
    affine = np.diag([-1.0, -1.0, 1.5, 1.0])
    (tmp_path / "in").mkdir()
    write_nifti(
        tmp_path / "in" / "big.nii.gz", np.random.default_rng(0).random((70, 52, 9)), affine
    )
    result = invoke(
        runner, "predict", "--model", volume_run, "-i", tmp_path / "in", "-o", tmp_path / "out"
    )
    assert result.exit_code == 0, result.output
    mask = nib.load(tmp_path / "out" / "big.nii.gz")
    assert mask.shape == (70, 52, 9)
    np.testing.assert_allclose(mask.affine, affine)
    rows = list(csv.DictReader((tmp_path / "out" / "summary.csv").open()))
    assert rows[0]["status"] == "ok" and (tmp_path / "out" / "report.html").exists()


def test_a_3d_model_refuses_a_2d_image_in_one_line(volume_run: Path, runner, tmp_path: Path):
    from PIL import Image

    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "in" / "photo.png")
    result = invoke(
        runner, "predict", "--model", volume_run, "-i", tmp_path / "in", "-o", tmp_path / "out"
    )
    assert result.exit_code == 1
    assert "photo.png: this model segments 3D NIfTI volumes" in result.output
    assert "Traceback" not in result.output


def test_3d_options_that_cannot_work_are_refused_before_loading(
    tiny_2d: Path, micro_msd: Path, tmp_path: Path
):
    with pytest.raises(MedgraftError, match="--dims 3 trains on volumes"):
        run_training(volume_config(tiny_2d, tmp_path / "a"))
    with pytest.raises(MedgraftError, match="sees all three axes"):
        run_training(volume_config(micro_msd, tmp_path / "b", views="axial,coronal"))
    with pytest.raises(MedgraftError, match="multiple of 16"):
        run_training(volume_config(micro_msd, tmp_path / "c", volume_patch="50,48,16"))
    with pytest.raises(MedgraftError, match="--dims must be 2 or 3"):
        TrainConfig(data="d", output="o", dims=4)


def _checkpoint(conversion: str | None, spacing: tuple | None) -> Checkpoint:
    spec = get_encoder("tu-tf_efficientnet_lite0")
    arch = architecture(spec, 1 if conversion else 3, 3, conversion)
    model = build_segmenter(arch, spec)
    inputs = ModelInputs(
        preprocessing=Preprocessing(volumetric=True, spacing=spacing),
        slices=1 if conversion else 3,
        labels={"0": "background", "1": "a", "2": "b"},
        dims=3 if conversion else 2,
        patch=[32, 32, 16] if conversion else None,
    )
    return Checkpoint(arch, inputs, model.state_dict())


def test_3d_and_25d_models_ensemble_only_on_the_same_grid():
    volume_model, slice_model = _checkpoint("acs", (1.0, 1.0, 0.0)), _checkpoint(None, None)
    with pytest.raises(MedgraftError, match="disagree on 'spacing'"):
        Predictor.from_checkpoints([volume_model, slice_model], device=torch.device("cpu"))
    slice_model.inputs = replace(
        slice_model.inputs, preprocessing=volume_model.inputs.preprocessing
    )
    predictor = Predictor.from_checkpoints([slice_model, volume_model], device=torch.device("cpu"))
    segmentation = predictor.segment(torch.rand(1, 20, 24, 10))
    assert segmentation.labels.shape == (20, 24, 10) and segmentation.slices == 10


def test_ddp_two_processes_train_a_3d_model(micro_msd: Path, tmp_path: Path):
    run = tmp_path / "ddp"
    proc = run_torchrun(
        29541, "train", "--data", micro_msd, "--output", run, "--dims", "3", "--epochs", "1",
        "--batch-size", "2", "--val-fraction", "0.25", "--device", "cpu", "--offline",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    assert load_checkpoint(run / "last.pt").architecture.dims == 3


def test_a_study_trains_3d_models_from_its_config(micro_msd: Path, runner, tmp_path: Path):
    config = tmp_path / "volume.yaml"
    config.write_text("dims: 3\nbatch_size: 2\n")
    result = invoke(
        runner, "study", "--data", micro_msd, "--output", tmp_path / "study", "--config", config,
        "--inits", "imagenet,none", "--fractions", "1.0", "--seeds", "1", "--epochs", "1",
        "--val-fraction", "0.25", "--offline",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "study" / "results.csv").open()))
    assert {r["init"] for r in rows} == {"imagenet", "none"}
    run = next((tmp_path / "study" / "runs").iterdir())
    assert load_checkpoint(run / "last.pt").architecture.dims == 3
