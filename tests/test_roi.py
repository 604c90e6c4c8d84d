"""Regions of interest in training, and the DRIVE layout trained as it ships: images/,
1st_manual/ (GIF vessel maps) and mask/ (GIF field of view), with no conversion."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import invoke

from medgraft.data.discovery import discover_dataset
from medgraft.data.records import CaseRecord
from medgraft.errors import MedgraftError
from medgraft.training.losses import build_loss
from medgraft.training.regions import ignore_outside


def test_drive_layout_pairs_images_vessels_and_field_of_view(drive_layout: Path):
    spec = discover_dataset(drive_layout, labels_dir="1st_manual", roi_dir="mask")
    first = spec.training[0]
    assert first.case_id == "21_training"
    assert Path(first.label).name == "21_manual1.gif"
    assert Path(first.roi).name == "21_training_mask.gif"
    assert set(first.files()) == {"image", "label", "roi"}
    assert len(spec.training) == 6
    with pytest.raises(MedgraftError, match="--labels-dir folder not found"):
        discover_dataset(drive_layout, labels_dir="manual")


def test_outside_the_roi_there_is_no_gradient_and_no_loss():
    loss_fn = build_loss(TrainConfigLike())
    target = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    target[..., 1, 1] = 1
    roi = torch.zeros(1, 1, 4, 4)
    roi[..., :2, :2] = 1
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    loss = loss_fn(ignore_outside(logits, target, roi), target)
    loss.backward()
    assert torch.all(logits.grad[..., 2:, :] == 0) and torch.all(logits.grad[..., :, 2:] == 0)
    assert logits.grad[..., :2, :2].abs().sum() > 0
    # whatever the network says outside, the loss is the same
    other = logits.detach().clone()
    other[..., 2:, 2:] = 50.0
    again = loss_fn(ignore_outside(other, target, roi), target)
    assert float(again) == pytest.approx(float(loss), abs=1e-6)


def TrainConfigLike():
    from medgraft.config.schema import TrainConfig

    return TrainConfig(data="d", output="o")


@pytest.mark.slow
def test_drive_trains_without_conversion_and_validates_inside_the_field(
    drive_layout: Path, runner, tmp_path: Path
):
    run = tmp_path / "run"
    result = invoke(
        runner, "train", "--recipe", "none",
        "--data", drive_layout, "--labels-dir", "1st_manual", "--roi-dir",
        "mask", "--output", run, "--epochs", "2", "--image-size", "64", "--batch-size", "4",
        "--val-fraction", "0.34", "--offline",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["train_config"]["roi_dir"] == "mask"
    assert len(config["train_cases"]) == 4 and len(config["val_cases"]) == 2
    rows = list(csv.DictReader((run / "val_cases.csv").open()))
    assert {r["case"] for r in rows} == set(config["val_cases"])


class Everywhere:
    """A predictor that finds the vessels and also marks everything outside the field."""

    def __init__(self, field: torch.Tensor) -> None:
        self.field = field

    def segment(self, image: torch.Tensor):
        class Result:
            labels = None

        result = Result()
        result.labels = torch.where(self.field, self.vessels, torch.ones_like(self.vessels))
        return result


def test_validation_scores_inside_the_roi_only():
    from medgraft.data.cases import LoadedCase
    from medgraft.training.validation import score_validation_cases

    field = torch.zeros(8, 8, dtype=torch.bool)
    field[2:6, 2:6] = True
    vessels = torch.zeros(8, 8, dtype=torch.long)
    vessels[3, 2:6] = 1
    predictor = Everywhere(field)
    predictor.vessels = vessels
    case = LoadedCase(
        CaseRecord("21_training", "21_training.tif"),
        image=torch.zeros(3, 8, 8),
        label=vessels[None],
        spacing=[1.0, 1.0],
        roi=field[None].float(),
    )
    inside = score_validation_cases(predictor, [case], num_classes=2, metrics=["dice"])
    assert inside.values["dice"] == [[1.0]]
    case.roi = None
    whole = score_validation_cases(predictor, [case], num_classes=2, metrics=["dice"])
    assert whole.values["dice"][0][0] < 0.2
