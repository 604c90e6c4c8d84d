"""The typed checkpoint: runs saved by earlier medgraft versions still load, predict and resume;
a round trip keeps every part; bad files name themselves."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medgraft.config.loading import resolve_options
from medgraft.config.schema import InferenceOptions, TrainConfig
from medgraft.errors import MedgraftError
from medgraft.inference.predictor import Predictor
from medgraft.models.checkpoint import load_checkpoint, load_model, save_checkpoint
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
