"""Multi-modal volumes: nnU-Net channel files (``_0000``, ``_0001``) and MSD 4D NIfTI train and
predict; the checkpoint records the modality order and predict refuses a case whose channels do
not match it. No real multi-modal data is at hand, so the data are generated: two channels
that each see the lesion (one brighter, one darker), on the same grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_nifti

from medgraft.config.schema import PredictOptions, TrainConfig
from medgraft.data.discovery import discover_dataset
from medgraft.data.io import list_scans, read_channels
from medgraft.data.records import CaseRecord
from medgraft.data.transforms import (
    ChannelIntensityd,
    Preprocessing,
    apply_case_transforms,
    geometry_transforms,
)
from medgraft.errors import MedgraftError
from medgraft.inference.batch import load_predictor, predict_cases
from medgraft.models.checkpoint import load_checkpoint
from medgraft.training.trainer import run_training as train

SHAPE = (32, 32, 6)
CHANNELS = {"0": "T2", "1": "ADC"}


def two_channel_case(seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    label = np.zeros(SHAPE, np.uint8)
    x, y = rng.integers(4, 16, size=2)
    label[x : x + 10, y : y + 10, 1:5] = 1
    lesion = label.astype(np.float64)
    t2 = rng.normal(100, 10, SHAPE) + 80 * lesion
    adc = rng.normal(1000, 50, SHAPE) - 400 * lesion
    return [t2.astype(np.float32), adc.astype(np.float32)], label


@pytest.fixture(scope="module")
def nnunet_two_channels(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nnunet_mm")
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir()
    for i in range(6):
        channels, label = two_channel_case(i)
        for c, image in enumerate(channels):
            write_nifti(root / "imagesTr" / f"case{i}_{c:04d}.nii.gz", image)
        write_nifti(root / "labelsTr" / f"case{i}.nii.gz", label)
    channels, _ = two_channel_case(99)
    for c, image in enumerate(channels):
        write_nifti(root / "imagesTs" / f"new_{c:04d}.nii.gz", image)
    manifest = {"channel_names": CHANNELS, "labels": {"background": 0, "lesion": 1}}
    (root / "dataset.json").write_text(json.dumps(manifest))
    return root


def test_nnunet_channel_files_make_one_case_each(nnunet_two_channels: Path):
    spec = discover_dataset(nnunet_two_channels)
    assert spec.channels == ["T2", "ADC"]
    assert [r.case_id for r in spec.training] == [f"case{i}" for i in range(6)]
    assert [p.name for p in list_scans(nnunet_two_channels / "imagesTs")] == ["new_0000.nii.gz"]
    first = spec.training[0]
    assert [p.name for p in first.channels] == ["case0_0000.nii.gz", "case0_0001.nii.gz"]
    image = read_channels(Path(first.image))
    assert image.shape == (2, *SHAPE)


def test_a_case_missing_a_channel_file_is_named(nnunet_two_channels: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(nnunet_two_channels, broken)
    (broken / "imagesTr" / "case3_0001.nii.gz").unlink()
    with pytest.raises(MedgraftError, match=r"case3_0000.nii.gz: 1 channel file.*T2, ADC"):
        discover_dataset(broken)


def test_channels_on_another_grid_are_refused(tmp_path: Path):
    write_nifti(tmp_path / "a_0000.nii.gz", np.zeros(SHAPE, np.float32))
    write_nifti(tmp_path / "a_0001.nii.gz", np.zeros(SHAPE, np.float32), np.diag([2, 1, 1, 1]))
    with pytest.raises(MedgraftError, match=r"a_0001\.nii\.gz: channel on another voxel grid"):
        read_channels(tmp_path / "a_0000.nii.gz")


def test_msd_4d_volume_loads_its_channels_and_a_wrong_count_is_named(tmp_path: Path):
    channels, _ = two_channel_case(1)
    write_nifti(tmp_path / "brain.nii.gz", np.stack(channels, -1))
    prep = Preprocessing(volumetric=True, channels=("FLAIR", "T1w"))
    record = CaseRecord("brain", str(tmp_path / "brain.nii.gz")).files()
    loaded = apply_case_transforms(geometry_transforms(prep, with_label=False), record)
    assert loaded["image"].shape == (2, *SHAPE)
    np.testing.assert_allclose(loaded["image"][1].numpy(), channels[1], rtol=1e-5)
    three = Preprocessing(volumetric=True, channels=("FLAIR", "T1w", "T2"))
    with pytest.raises(MedgraftError, match=r"4D file with 2 volumes.*expected 3 channels"):
        apply_case_transforms(geometry_transforms(three, with_label=False), record)


def test_ct_channels_get_the_window_and_mri_channels_their_percentiles():
    image = torch.stack([torch.linspace(-1000, 1000, 1000), torch.linspace(0, 5000, 1000)])
    scaled = ChannelIntensityd("image", (-100.0, 100.0), [True, False])({"image": image})["image"]
    ct, mri = scaled
    assert float(ct[image[0] <= -100].max()) == 0.0 and float(ct[image[0] >= 100].min()) == 1.0
    assert 0.0 < float(ct[500]) < 1.0
    assert (
        float(mri.min()) == 0.0
        and float(mri.max()) == 1.0
        and float(mri[500]) == pytest.approx(0.5, abs=0.01)
    )


@pytest.fixture(scope="module")
def two_channel_run(nnunet_two_channels: Path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("mm_run") / "run"
    config = TrainConfig(
        data=str(nnunet_two_channels), output=str(run), epochs=3, batch_size=8, lr=0.01,
        val_fraction=0.34, seed=0, offline=True, samples_per_epoch=96,
    )  # fmt: skip
    train(config)
    return run


@pytest.mark.slow
def test_the_checkpoint_records_the_modality_order(two_channel_run: Path):
    checkpoint = load_checkpoint(two_channel_run / "last.pt")
    assert checkpoint.inputs.channels == ("T2", "ADC")
    assert checkpoint.architecture.in_channels == 2 * 3  # 2 modalities x k=3 slices


@pytest.mark.slow
def test_predict_segments_a_two_channel_case_and_refuses_a_missing_channel(
    two_channel_run: Path, nnunet_two_channels: Path, tmp_path: Path
):
    predictor = load_predictor([two_channel_run / "last.pt"], PredictOptions())
    options = PredictOptions(tta=False)
    [result] = predict_cases(
        predictor, [nnunet_two_channels / "imagesTs" / "new_0000.nii.gz"], tmp_path / "out", options
    )
    assert result.status == "ok", result.message
    assert (tmp_path / "out" / "new.nii.gz").is_file()
    assert result.sizes[0] > 0  # the lesion, seen through both channels, is found
    lone = tmp_path / "lone"
    lone.mkdir()
    write_nifti(lone / "only_0000.nii.gz", two_channel_case(5)[0][0])
    [failed] = predict_cases(predictor, [lone / "only_0000.nii.gz"], tmp_path / "out2", options)
    assert failed.status == "failed"
    assert (
        "only_0000.nii.gz" in failed.message and "expected 2 channels (T2, ADC)" in failed.message
    )


@pytest.mark.slow
def test_2d_images_with_named_channels_train_and_predict(tmp_path: Path):
    """nnU-Net 2D: <case>_0000.png and <case>_0001.png, two channels that are not RGB."""
    from PIL import Image

    root = tmp_path / "nnunet2d"
    for folder in ("imagesTr", "labelsTr", "new"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        label = np.zeros((32, 32), np.uint8)
        x, y = rng.integers(4, 20, size=2)
        label[x : x + 8, y : y + 8] = 1
        for c, level in enumerate((200, 40)):  # bright in one channel, dark in the other
            image = rng.normal(120, 10, (32, 32)) + (level - 120) * label.astype(float)
            channel = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
            channel.save(root / "imagesTr" / f"c{i}_{c:04d}.png")
            if i == 0:
                channel.save(root / "new" / f"n_{c:04d}.png")
        Image.fromarray(label).save(root / "labelsTr" / f"c{i}.png")
    manifest = {
        "channel_names": {"0": "visible", "1": "infrared"},
        "labels": {"background": 0, "x": 1},
    }
    (root / "dataset.json").write_text(json.dumps(manifest))
    config = TrainConfig(
        data=str(root), output=str(tmp_path / "run"), epochs=1, batch_size=4, image_size=32,
        val_fraction=0.2, offline=True,
    )  # fmt: skip
    train(config)
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    assert checkpoint.inputs.channels == ("visible", "infrared")
    assert checkpoint.architecture.in_channels == 2
    predictor = load_predictor([tmp_path / "run" / "last.pt"], PredictOptions())
    [result] = predict_cases(
        predictor, list_scans(root / "new"), tmp_path / "out", PredictOptions(tta=False)
    )
    assert result.status == "ok", result.message
    mask = np.asarray(Image.open(tmp_path / "out" / "n.png"))
    assert mask.shape == (32, 32)
