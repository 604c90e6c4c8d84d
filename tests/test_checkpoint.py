"""The typed checkpoint: runs saved by earlier medgraft versions still load, predict and resume;
a round trip keeps every part; bad files name themselves; a run folder means its final model."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import invoke, write_nifti

from medgraft.config.loading import resolve_options
from medgraft.config.schema import InferenceOptions, TrainConfig
from medgraft.data.transforms import Preprocessing
from medgraft.errors import MedgraftError
from medgraft.inference.predictor import Predictor
from medgraft.models.checkpoint import (
    Checkpoint,
    ModelInputs,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from medgraft.models.registry import get_encoder
from medgraft.models.unet import architecture, build_segmenter

SPEC = get_encoder("tu-tf_efficientnet_lite0")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_segmenter(architecture(SPEC, 3, 3), SPEC).eval()


def earlier_version_payload(model) -> dict:
    """What medgraft 0.1's training loop wrote to last.pt: plain dicts throughout."""
    arch = architecture(SPEC, 3, 3)
    data = {
        "volumetric": True,
        "orientation": "RAS",
        "spacing": (1.0, 1.0, 0.0),
        "intensity": "percentile",
        "window": None,
        "image_size": None,
        "slices": 3,
        "mirror_axes": [],
        "labels": {"0": "background", "1": "Anterior", "2": "Posterior"},
        "modality": "MRI",
        "inference": {"tta": False, "largest_component": True, "min_size": 0},
    }
    train_config = {
        "data": "d",
        "output": "o",
        "epochs": 3,
        "augment": {"flips": False},
        "inference": {"tta": False},
    }
    return {
        "format": "medgraft-checkpoint-v1",
        "architecture": {
            "encoder": arch.encoder,
            "in_channels": 3,
            "classes": 3,
            "mean": arch.mean,
            "std": arch.std,
        },
        "data": data,
        "config": {"weights_record": {"encoder": {"origin": "random"}, "decoder": "random"}},
        "train_config": train_config,
        "model_state": model.state_dict(),
        "optimizer": {"state": {}, "param_groups": []},
        "scheduler": {},
        "scaler": {},
        "rng": {"torch": torch.get_rng_state()},
        "epoch": 2,
        "val_dice": 0.5,
        "best_dice": 0.6,
        "best_epoch": 1,
    }


def test_a_checkpoint_of_an_earlier_version_loads_predicts_and_resumes(model, tmp_path: Path):
    path = tmp_path / "last.pt"
    torch.save(earlier_version_payload(model), path)
    checkpoint = load_checkpoint(path)
    assert checkpoint.epoch == 2 and checkpoint.best_epoch == 1
    assert checkpoint.inputs.preprocessing.spacing == (1.0, 1.0, 0.0)
    assert checkpoint.inputs.inference == InferenceOptions(tta=False, largest_component=True)
    assert checkpoint.training_state is not None and "optimizer" in checkpoint.training_state
    batch = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(load_model(checkpoint)(batch), model(batch))
    predictor = Predictor.from_checkpoints([checkpoint], device=torch.device("cpu"))
    assert predictor.segment(torch.rand(1, 40, 36, 5)).labels.shape == (40, 36, 5)
    resumed = TrainConfig(**resolve_options([checkpoint.train_config]))
    assert resumed.epochs == 3 and resumed.augment.flips is False and not resumed.inference.tta


def test_round_trip_keeps_every_part(model, tmp_path: Path):
    original = load_checkpoint(_saved(earlier_version_payload(model), tmp_path / "a.pt"))
    save_checkpoint(original, tmp_path / "b.pt")
    again = load_checkpoint(tmp_path / "b.pt")
    assert again.to_dict().keys() == original.to_dict().keys()
    assert (again.architecture, again.inputs, again.config) == (
        original.architecture,
        original.inputs,
        original.config,
    )
    assert again.model_state.keys() == original.model_state.keys()


def _saved(payload: dict, path: Path) -> Path:
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "something-else"}, "not a medgraft checkpoint"),
        ({"data": None}, "invalid medgraft checkpoint"),
        (
            {"data": {"slices": 3, "labels": {}, "volumetric": True, "inference": {"tta": 1}}},
            "invalid medgraft checkpoint",
        ),
    ],
)
def test_bad_checkpoints_name_the_file(model, tmp_path: Path, change: dict, message: str):
    path = _saved({**earlier_version_payload(model), **change}, tmp_path / "bad.pt")
    with pytest.raises(MedgraftError, match=message) as error:
        load_checkpoint(path)
    assert str(error.value).startswith(str(path))


HEAD_BIAS = "unet.segmentation_head.0.bias"
LABELS = {"0": "background", "1": "a", "2": "b"}


def checkpoint_predicting(model, label: int, **extra) -> Checkpoint:
    """``model``'s checkpoint with a head bias so large that every voxel gets ``label``: which
    checkpoint predicted a mask is then read off the mask."""
    state = {key: value.clone() for key, value in model.state_dict().items()}
    state[HEAD_BIAS][label] += 100.0
    inputs = ModelInputs(Preprocessing(volumetric=True), slices=3, labels=LABELS)
    return Checkpoint(architecture(SPEC, 3, 3), inputs, state, **extra)


@pytest.fixture
def run_whose_best_and_last_differ(model, tmp_path: Path) -> Path:
    """A run folder whose ``last.pt`` (with the optimizer state ``--resume`` needs, which
    prediction ignores) segments everything as label 1, and whose ``best.pt`` as label 2."""
    run = tmp_path / "run"
    run.mkdir()
    resume_state = {"optimizer": {"state": {}, "param_groups": []}, "rng": {}}
    save_checkpoint(checkpoint_predicting(model, 2, epoch=2), run / "best.pt")
    save_checkpoint(
        checkpoint_predicting(model, 1, epoch=3, training_state=resume_state), run / "last.pt"
    )
    return run


@pytest.fixture(scope="module")
def scan_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scans")
    write_nifti(folder / "scan.nii.gz", np.random.default_rng(0).random((32, 32, 4), "float32"))
    return folder


def predicted_labels(runner, run: Path, scans: Path, output: Path, *flags: str) -> set[int]:
    """The label values ``medgraft predict`` writes for ``scans`` with model ``run``."""
    result = invoke(runner, "predict", "--model", run, "-i", scans, "-o", output, *flags)
    assert result.exit_code == 0, result.output
    return set(np.unique(np.asarray(nib.load(str(output / "scan.nii.gz")).dataobj)).tolist())


def test_a_run_folder_predicts_with_its_last_checkpoint_unless_told(
    run_whose_best_and_last_differ: Path, scan_folder: Path, runner, tmp_path: Path
):
    run = run_whose_best_and_last_differ
    assert predicted_labels(runner, run, scan_folder, tmp_path / "default") == {1}
    for choice, label in (("last", 1), ("best", 2)):
        flags = ("--checkpoint", choice)
        assert predicted_labels(runner, run, scan_folder, tmp_path / choice, *flags) == {label}


def test_checkpoint_may_name_a_file_inside_the_run(
    model, run_whose_best_and_last_differ: Path, scan_folder: Path, runner, tmp_path: Path
):
    run = run_whose_best_and_last_differ
    (run / "snapshots").mkdir()
    save_checkpoint(checkpoint_predicting(model, 0), run / "snapshots" / "early.pt")
    flags = ("--checkpoint", "snapshots/early.pt")
    assert predicted_labels(runner, run, scan_folder, tmp_path / "early", *flags) == {0}
    missing = invoke(
        runner, "predict", "--model", run, "-i", scan_folder, "-o", tmp_path / "none",
        "--checkpoint", "snapshots/later.pt",
    )  # fmt: skip
    assert missing.exit_code == 1
    assert str(missing.exception) == (
        f"{run}: checkpoint not found (no snapshots/later.pt, nor fold_N/ or view folders "
        "holding one)"
    )


def test_a_run_interrupted_mid_epoch_is_not_predicted_from(
    model, run_whose_best_and_last_differ: Path, scan_folder: Path, runner, tmp_path: Path
):
    run = run_whose_best_and_last_differ
    save_checkpoint(checkpoint_predicting(model, 1, interrupted_in_epoch=4), run / "last.pt")
    result = invoke(runner, "predict", "--model", run, "-i", scan_folder, "-o", tmp_path / "out")
    assert result.exit_code == 1 and isinstance(result.exception, MedgraftError)
    message = str(result.exception)
    assert message.startswith(f"{run / 'last.pt'}: the run was interrupted during epoch 4")
    assert "--resume" in message and "--checkpoint best" in message and "\n" not in message
    assert not (tmp_path / "out").exists()
    best = predicted_labels(runner, run, scan_folder, tmp_path / "best", "--checkpoint", "best")
    assert best == {2}


def test_init_from_a_run_folder_takes_its_last_checkpoint(
    run_whose_best_and_last_differ: Path,
):
    """``--init-from RUN`` loads ``load_checkpoint(RUN)``: the final model, as predict does."""
    last = load_checkpoint(run_whose_best_and_last_differ / "last.pt")
    source = load_checkpoint(run_whose_best_and_last_differ)
    assert source.epoch == last.epoch == 3
    torch.testing.assert_close(source.model_state, last.model_state)
