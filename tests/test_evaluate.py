"""Dice, HD95 and NSD from ``evaluate_folders`` on synthetic masks with hand-computed scores."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from medgraft.errors import MedgraftError
from medgraft.evaluation.evaluate import Evaluation, evaluate_folders
from medgraft.evaluation.metrics import error_bands_per_class

SPACING = (0.5, 0.5, 2.0)
LABELS = {0: "background", 1: "a", 2: "b"}


def box(x: tuple[int, int], label: int = 1) -> np.ndarray:
    """A 20x20x10 label map with a 4x10x4 box of ``label`` at x in [x0, x1)."""
    volume = np.zeros((20, 20, 10), dtype=np.uint8)
    volume[x[0] : x[1], 5:15, 3:7] = label
    return volume


def save(path: Path, volume: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, np.diag([*SPACING, 1.0])), str(path))


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    """Truth and prediction folders of 3D cases with spacing (0.5, 0.5, 2.0) mm.

    - ``perfect``: classes a and b, predicted exactly;
    - ``shifted``: class a only, predicted 2 voxels (1 mm) further along x;
    - ``missed``: classes a and b, b missing from the prediction;
    - ``nopred`` has no prediction, ``stray`` no ground truth.
    """
    root = tmp_path_factory.mktemp("evaluate")
    with_b = box((6, 10))
    with_b[14:18, 2:6, 2:5] = 2
    save(root / "truth" / "perfect.nii.gz", with_b)
    save(root / "pred" / "perfect.nii.gz", with_b)
    save(root / "truth" / "shifted.nii.gz", box((6, 10)))
    save(root / "pred" / "shifted.nii.gz", box((8, 12)))
    save(root / "truth" / "missed.nii.gz", with_b)
    save(root / "pred" / "missed.nii.gz", box((6, 10)))
    save(root / "truth" / "nopred.nii.gz", box((6, 10)))
    save(root / "pred" / "stray.nii.gz", box((6, 10)))
    return root / "pred", root / "truth"


@pytest.fixture(scope="module")
def evaluation(folders) -> Evaluation:
    return evaluate_folders(*folders, label_names=LABELS)


def row(evaluation: Evaluation, case: str) -> dict:
    return next(r for r in evaluation.rows if r["case_id"] == case)


def test_matching_reports_missing_and_extra_cases(evaluation: Evaluation):
    assert [r["case_id"] for r in evaluation.rows] == ["missed", "perfect", "shifted"]
    assert evaluation.missing == ["nopred"] and evaluation.extra == ["stray"]


def test_perfect_prediction(evaluation: Evaluation):
    scores = row(evaluation, "perfect")
    for name in ("a", "b"):
        assert (scores[f"dice_{name}"], scores[f"hd95_{name}"], scores[f"nsd_{name}"]) == (1, 0, 1)


def test_shift_by_two_voxels_of_half_a_millimetre(evaluation: Evaluation, folders):
    # Truth x 6..9, prediction x 8..11: they overlap on 2 of 4 slabs -> Dice 2*80/(160+160).
    # Each box has 128 boundary voxels; the 40 on the far face (x=11 in the prediction, x=6 in the
    # truth) lie 2 voxels * 0.5 mm = 1 mm from the other boundary, all others 0 or 0.5 mm. 40/128
    # is more than 5 %, so HD95 is exactly 1 mm, and NSD is 1 at 1 mm and (256-80)/256 at 0.5 mm.
    scores = row(evaluation, "shifted")
    assert scores["dice_a"] == pytest.approx(0.5)
    assert scores["hd95_a"] == 1.0
    assert scores["nsd_a"] == 1.0
    strict = evaluate_folders(*folders, label_names=LABELS, nsd_tolerance={1: 0.5})
    assert row(strict, "shifted")["nsd_a"] == pytest.approx(176 / 256)
    assert strict.nsd_tolerance == {1: 0.5, 2: 1.0}


def test_empty_class_conventions(evaluation: Evaluation):
    absent = row(evaluation, "shifted")  # b in neither truth nor prediction
    assert all(math.isnan(absent[f"{m}_b"]) for m in ("dice", "hd95", "nsd"))
    missed = row(evaluation, "missed")  # b in truth, not predicted
    assert (missed["dice_b"], missed["nsd_b"], missed["hd95_b"]) == (0, 0, math.inf)
    summary = evaluation.summary()
    hd95_b = summary["hd95"]["b"]
    assert (hd95_b.mean, hd95_b.n, hd95_b.n_inf) == (0, 1, 1)
    dice_b = summary["dice"]["b"]
    assert (dice_b.mean, dice_b.std, dice_b.n) == (0.5, 0.5, 2)
    assert summary["hd95"]["a"].mean == pytest.approx(1 / 3)
    assert evaluation.class_means() == pytest.approx({"a": 2.5 / 3, "b": 0.5})
    assert evaluation.mean_dice() == pytest.approx((2.5 / 3 + 0.5) / 2)


def test_csv_has_metric_columns_and_summary_rows(evaluation: Evaluation, tmp_path: Path):
    path = tmp_path / "metrics.csv"
    evaluation.write_csv(path)
    with path.open() as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == [
        "case_id",
        *("dice_a", "dice_b", "hd95_a", "hd95_b", "nsd_a", "nsd_b"),
        "mean_dice",
    ]
    assert [r["case_id"] for r in rows] == ["missed", "perfect", "shifted", "STD", "MEAN"]
    assert rows[0]["hd95_b"] == "inf" and rows[2]["dice_b"] == "nan"
    assert float(rows[-1]["hd95_a"]) == pytest.approx(1 / 3, abs=1e-5)
    assert float(rows[-1]["dice_b"]) == 0.5 and float(rows[-2]["dice_b"]) == 0.5


def test_table_shows_mean_std_and_missed_count(evaluation: Evaluation):
    console = Console(record=True, width=250)
    console.print(evaluation.table())
    text = console.export_text()
    assert "mean ± std" in text and "(1 missed)" in text and "HD95 a" in text


def test_table_never_cuts_case_ids(evaluation: Evaluation):
    long_id = "hippocampus_20240101_subject-0042_visit-3"
    renamed = Evaluation(
        evaluation.label_names,
        rows=[{**r, "case_id": f"{long_id}_{r['case_id']}"} for r in evaluation.rows],
        nsd_tolerance=evaluation.nsd_tolerance,
    )
    console = Console(record=True, width=80)
    console.print(renamed.table())
    text = console.export_text()
    assert all(f"{long_id}_{r['case_id']}" in text for r in evaluation.rows), text


def test_2d_png_masks_use_pixel_spacing(tmp_path: Path):
    # Rows 5..8 vs 7..10 of a 4x10 rectangle: Dice 2*20/80; the 10 pixels of the far row lie 2
    # pixels from the other boundary, 10 of 24 boundary pixels, so HD95 is 2 (spacing 1).
    for folder, rows in (("truth", slice(5, 9)), ("pred", slice(7, 11))):
        mask = np.zeros((20, 20), dtype=np.uint8)
        mask[rows, 5:15] = 255
        (tmp_path / folder).mkdir()
        Image.fromarray(mask).save(tmp_path / folder / "img.png")
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth")
    shifted = row(result, "img")
    assert shifted["dice_label_1"] == pytest.approx(0.5)
    assert shifted["hd95_label_1"] == 2.0
    assert list(result.label_names.values()) == ["label_1"]


def test_unknown_tolerance_label_is_an_error(folders):
    with pytest.raises(MedgraftError, match="unknown label"):
        evaluate_folders(*folders, label_names=LABELS, nsd_tolerance={7: 1.0})


def test_stray_label_values_name_the_file_or_count_as_background(tmp_path: Path):
    pred_dir, truth_dir = tmp_path / "pred", tmp_path / "truth"
    pred_dir.mkdir()
    truth_dir.mkdir()
    save(pred_dir / "a.nii.gz", box((2, 6)))
    truth = box((2, 6)).astype(np.int16)
    truth[0, 0, 0] = -2  # as in one label of the real MSD hippocampus copy
    save(truth_dir / "a.nii.gz", truth)
    labels = {0: "background", 1: "one"}
    with pytest.raises(MedgraftError, match=r"a\.nii\.gz: label values \[-2\] \(1 voxels\)"):
        evaluate_folders(pred_dir, truth_dir, labels)
    result = evaluate_folders(pred_dir, truth_dir, labels, stray_to_background=True)
    assert result.stray == {str(truth_dir / "a.nii.gz"): 1}
    assert row(result, "a")["dice_one"] == pytest.approx(1.0)


@pytest.fixture
def drive_like(tmp_path: Path) -> dict[str, Path]:
    """DRIVE's naming: vessels in 1st_manual/NN_manual1.gif (0/255), the field of view in
    mask/NN_training_mask.gif, predictions NN_training.png. Inside the field of view the
    prediction is exact; outside it, it marks a block the truth does not have."""
    folders = {name: tmp_path / name for name in ("1st_manual", "mask", "pred")}
    for folder in folders.values():
        folder.mkdir()
    for case in ("21", "22"):
        vessels = np.zeros((40, 40), np.uint8)
        vessels[10:30, 18:22] = 255
        field = np.zeros((40, 40), np.uint8)
        field[5:35, 5:35] = 255
        prediction = (vessels > 0).astype(np.uint8)
        prediction[0:4, 0:20] = 1  # outside the field of view
        Image.fromarray(vessels).save(folders["1st_manual"] / f"{case}_manual1.gif")
        Image.fromarray(field).save(folders["mask"] / f"{case}_training_mask.gif")
        Image.fromarray(prediction).save(folders["pred"] / f"{case}_training.png")
    return folders


def test_gif_masks_pair_by_case_key_and_score_inside_the_roi(drive_like: dict[str, Path]):
    whole = evaluate_folders(drive_like["pred"], drive_like["1st_manual"], {0: "bg", 1: "vessel"})
    assert [r["case_id"] for r in whole.rows] == ["21_training", "22_training"]
    assert not whole.missing and not whole.extra
    assert whole.rows[0]["dice_vessel"] == pytest.approx(2 * 80 / (80 + 160))
    inside = evaluate_folders(
        drive_like["pred"], drive_like["1st_manual"], {0: "bg", 1: "vessel"},
        roi_mask=drive_like["mask"],
    )  # fmt: skip
    assert [r["dice_vessel"] for r in inside.rows] == [1.0, 1.0]
    one_file = drive_like["mask"] / "21_training_mask.gif"
    same = evaluate_folders(drive_like["pred"], drive_like["1st_manual"], roi_mask=one_file)
    assert [r["dice_label_1"] for r in same.rows] == [1.0, 1.0]


def test_roi_from_the_command_line_and_a_missing_roi(drive_like: dict[str, Path], runner):
    from conftest import invoke

    args = ["evaluate", "--pred", drive_like["pred"], "--truth", drive_like["1st_manual"]]
    result = invoke(runner, *args, "--roi-mask", drive_like["mask"])
    assert result.exit_code == 0, result.output
    assert "1.000" in result.output
    (drive_like["mask"] / "22_training_mask.gif").unlink()
    result = invoke(runner, *args, "--roi-mask", drive_like["mask"])
    assert result.exit_code == 1
    assert "no ROI mask for case 22_training" in str(result.exception)


def test_error_bands_split_border_slips_from_missed_parts():
    truth = torch.zeros(12, 12, 12, dtype=torch.long)
    truth[2:8, 2:8, 2:8] = 1
    pred = torch.zeros_like(truth)
    pred[3:9, 2:8, 2:8] = 1  # shifted one voxel: every error touches the border
    pred[10:12, 10:12, 10:12] = 1  # an invented blob, far from the structure
    [bands] = error_bands_per_class(pred, truth, 2)
    assert bands == {
        "true_positive": 5 * 36,
        "fp_boundary": 36,  # the layer added beyond the far face
        "fp_far": 8,
        "fn_boundary": 36,  # the layer lost from the near face
        "fn_far": 0,
    }
    half = torch.zeros_like(truth)
    half[2:5, 2:8, 2:8] = 1  # half the structure missed: its inner layers are far errors
    [bands] = error_bands_per_class(half, truth, 2)
    assert bands["fn_boundary"] + bands["fn_far"] == 3 * 36 and bands["fn_far"] > 0
