"""Batch segmentation: geometry, skip/overwrite, atomic writes, ensembles, TTA, extras, sharding."""

import csv
import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import invoke, run_torchrun, write_nifti
from PIL import Image
from test_qa_page import Page

from medgraft.inference.batch import safe_case_id, shard
from medgraft.inference.postprocess import keep_largest_component, remove_small_objects
from medgraft.inference.predictor import Predictor
from medgraft.models.checkpoint import load_checkpoint, save_checkpoint

ORIENTATIONS = {
    "oblique": np.array(
        [[0.0, -0.9, 0.1, 10.0], [1.1, 0.0, 0.0, -20.0], [0.0, 0.1, 2.0, 5.0], [0, 0, 0, 1]]
    ),
    "lps": np.diag([-1.0, -1.0, 1.5, 1.0]),
    "pir": np.array(
        [[0.0, 0.0, -1.2, 30.0], [-0.8, 0.0, 0.0, 12.0], [0.0, -1.0, 0.0, 7.0], [0, 0, 0, 1]]
    ),
}


@pytest.fixture(scope="module")
def scans(tiny_msd: Path, tmp_path_factory) -> Path:
    """Real MRI crops (not multiples of 32) stored with oblique and non-RAS orientations."""
    folder = tmp_path_factory.mktemp("scans")
    data = np.asarray(nib.load(str(next((tiny_msd / "imagesTr").glob("*.nii.gz")))).dataobj)
    crop = data[:, :48, :40].astype(np.float32)
    for name, affine in ORIENTATIONS.items():
        write_nifti(folder / f"{name}_0000.nii.gz", crop, affine)
    write_nifti(folder / "plain.nii", crop)
    return folder


@pytest.fixture(scope="module")
def predicted(mri_run: Path, scans: Path, runner, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("predicted")
    result = invoke(
        runner,
        "predict",
        "--model",
        mri_run,
        "-i",
        scans,
        "-o",
        out,
        "--save-probabilities",
        "--overlays",
        "--no-tta",
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("name", [*ORIENTATIONS, "plain"])
def test_mask_has_the_input_geometry(scans: Path, predicted: Path, name: str):
    source = next(scans.glob(f"{name}*"))
    image, mask = nib.load(str(source)), nib.load(str(predicted / f"{name}.nii.gz"))
    assert mask.shape == image.shape
    np.testing.assert_allclose(mask.affine, image.affine, atol=1e-5)
    np.testing.assert_allclose(mask.get_qform(), image.get_qform(), atol=1e-5)
    np.testing.assert_allclose(mask.get_sform(), image.get_sform(), atol=1e-5)
    assert mask.header.get_data_dtype() == np.uint8
    assert nib.aff2axcodes(mask.affine) == nib.aff2axcodes(image.affine)


def test_summary_probabilities_and_overlays(predicted: Path):
    rows = {r["case_id"]: r for r in csv.DictReader((predicted / "summary.csv").open())}
    assert set(rows) == {"oblique", "lps", "pir", "plain"}
    row = rows["lps"]
    assert row["status"] == "ok" and int(row["slices"]) == 40 and float(row["seconds"]) > 0
    mask = np.asarray(nib.load(str(predicted / "lps.nii.gz")).dataobj)
    voxel_ml = 1.0 * 1.0 * 1.5 / 1000
    assert float(row["Anterior_ml"]) == pytest.approx((mask == 1).sum() * voxel_ml, rel=1e-3)
    probs = nib.load(str(predicted / "lps_probabilities.nii.gz"))
    assert probs.shape == (*mask.shape, 3)
    np.testing.assert_allclose(np.asarray(probs.dataobj).sum(-1), 1.0, atol=5e-3)
    # probabilities are stored as float16: near-ties may round either way
    assert (np.asarray(probs.dataobj).argmax(-1) != mask).mean() < 1e-3
    overlay = np.asarray(Image.open(predicted / "lps_overlay.png"))
    assert overlay.ndim == 3 and overlay.shape[0] == 64 and overlay.shape[2] == 3


def test_predict_writes_a_qa_page_of_the_batch(predicted: Path):
    page = Page((predicted / "report.html").read_text())
    assert {cells[0] for cells in page.rows} == {"oblique", "lps", "pir", "plain"}
    thumbnails = [attrs["src"] for tag, attrs in page.tags if tag == "img"]
    assert len(thumbnails) == 4 and all(t.startswith("data:image/png") for t in thumbnails)


def test_shards_run_here_merge_into_what_one_run_writes(
    mri_run: Path, scans: Path, predicted: Path, runner, tmp_path: Path
):
    """``--shards`` with the local launcher: each shard in turn, then one merged summary."""
    out = tmp_path / "sharded"
    args = ["--save-probabilities", "--overlays", "--no-tta", "--shards", "3"]
    result = invoke(runner, "predict", "--model", mri_run, "-i", scans, "-o", out, *args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "shards").iterdir()) == [
        f"shard-{index}-of-3.json" for index in range(3)
    ]

    def rows(folder: Path) -> list[dict]:
        return [
            {k: v for k, v in row.items() if k not in ("seconds", "output")}
            for row in csv.DictReader((folder / "summary.csv").open())
        ]

    assert rows(out) == rows(predicted)  # one row per case, in the same order
    for name in ("oblique", "lps", "pir", "plain"):
        mine = np.asarray(nib.load(str(out / f"{name}.nii.gz")).dataobj)
        np.testing.assert_array_equal(mine, nib.load(str(predicted / f"{name}.nii.gz")).dataobj)
    thumbnails = [a for tag, a in Page((out / "report.html").read_text()).tags if tag == "img"]
    assert len(thumbnails) == 4


def test_skip_existing_then_overwrite(mri_run: Path, scans: Path, runner, tmp_path: Path):
    out = tmp_path / "out"
    assert (
        invoke(
            runner, "predict", "--model", mri_run, "-i", scans / "plain.nii", "-o", out, "--no-tta"
        ).exit_code
        == 0
    )
    first = (out / "plain.nii.gz").stat().st_mtime_ns
    again = invoke(runner, "predict", "--model", mri_run, "-i", scans / "plain.nii", "-o", out)
    assert again.exit_code == 0 and "1 skipped" in again.output
    assert (out / "plain.nii.gz").stat().st_mtime_ns == first
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert rows[0]["status"] == "skipped"
    redo = invoke(
        runner,
        "predict",
        "--model",
        mri_run,
        "-i",
        scans / "plain.nii",
        "-o",
        out,
        "--overwrite",
        "--no-tta",
    )
    assert redo.exit_code == 0 and (out / "plain.nii.gz").stat().st_mtime_ns != first


def test_ensemble_averages_member_probabilities(mri_run: Path, tiny_msd: Path, tmp_path: Path):
    checkpoint = load_checkpoint(mri_run)
    other = dataclasses.replace(
        checkpoint, model_state={k: v.clone() for k, v in checkpoint.model_state.items()}
    )
    head = "unet.segmentation_head.0.bias"
    other.model_state[head] = other.model_state[head] + torch.tensor([0.0, 1.0, -1.0])
    batch = torch.rand(2, 3, 64, 48)
    device = torch.device("cpu")
    single = [
        Predictor.from_checkpoints([c], device=device)._probabilities(batch)
        for c in (checkpoint, other)
    ]
    both = Predictor.from_checkpoints([checkpoint, other], device=device)._probabilities(batch)
    torch.testing.assert_close(both, (single[0] + single[1]) / 2)


def test_ensemble_from_the_command_line(mri_run: Path, scans: Path, runner, tmp_path: Path):
    """Each --model counts: the ensemble's probabilities are the mean of each model's alone
    (within float16 storage), and differ from either."""
    other = load_checkpoint(mri_run)
    head = "unet.segmentation_head.0.bias"
    shifted = other.model_state[head] + torch.tensor([0.0, 1.0, -1.0])
    other.model_state = {**other.model_state, head: shifted}
    save_checkpoint(other, tmp_path / "other.pt")

    def probabilities(name: str, *models: Path) -> np.ndarray:
        flags = [word for model in models for word in ("--model", model)]
        out = tmp_path / name
        result = invoke(
            runner, "predict", *flags, "-i", scans / "plain.nii", "-o", out,
            "--save-probabilities", "--no-tta",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        return np.asarray(nib.load(str(out / "plain_probabilities.nii.gz")).dataobj, np.float32)

    first, second = probabilities("first", mri_run), probabilities("second", tmp_path / "other.pt")
    both = probabilities("both", mri_run, tmp_path / "other.pt")
    np.testing.assert_allclose(both, (first + second) / 2, atol=1e-3, rtol=0)
    assert np.abs(both - first).max() > 0.05 and np.abs(both - second).max() > 0.05


def test_tta_averages_the_four_mirrorings(mri_run: Path):
    checkpoint = load_checkpoint(mri_run)
    assert checkpoint.inputs.mirror_axes == []  # volumes train without flips by default
    no_flips = Predictor.from_checkpoints([checkpoint], device=torch.device("cpu"), tta=True)
    assert no_flips.flips == [()]
    inputs = dataclasses.replace(checkpoint.inputs, mirror_axes=[-2, -1])
    checkpoint = dataclasses.replace(checkpoint, inputs=inputs)
    batch = torch.rand(1, 3, 64, 64)
    plain = Predictor.from_checkpoints([checkpoint], device=torch.device("cpu"))
    tta = Predictor.from_checkpoints([checkpoint], device=torch.device("cpu"), tta=True)
    expected = (
        sum(
            plain._probabilities(batch.flip(axes) if axes else batch).flip(axes)
            if axes
            else plain._probabilities(batch)
            for axes in ((), (-1,), (-2,), (-2, -1))
        )
        / 4
    )
    torch.testing.assert_close(tta._probabilities(batch), expected)


def test_streaming_matches_one_big_batch(mri_run: Path):
    checkpoint = load_checkpoint(mri_run)
    volume = torch.rand(1, 40, 36, 23)
    small = Predictor.from_checkpoints([checkpoint], device=torch.device("cpu"), batch_size=4)
    large = Predictor.from_checkpoints([checkpoint], device=torch.device("cpu"), batch_size=64)
    a, b = small.segment(volume, True), large.segment(volume, True)
    torch.testing.assert_close(a.probabilities.float(), b.probabilities.float(), atol=2e-3, rtol=0)
    assert (a.labels != b.labels).float().mean() < 1e-3


def test_largest_component_and_min_size():
    labels = torch.zeros(20, 20, 4, dtype=torch.uint8)
    labels[1:6, 1:6, :] = 1  # 100 voxels
    labels[10:12, 10:12, 0] = 1  # 4 voxels
    labels[15:19, 15:19, :2] = 2  # 32 voxels
    largest = keep_largest_component(labels, 3)
    assert int((largest == 1).sum()) == 100 and int((largest == 2).sum()) == 32
    cleaned = remove_small_objects(labels, min_size=40, num_classes=3)
    assert int((cleaned == 1).sum()) == 100 and int((cleaned == 2).sum()) == 0


def test_case_ids_are_safe_file_names(tmp_path: Path):
    assert safe_case_id(Path("/in/../../etc/passwd_0000.nii.gz")) == "passwd"
    assert safe_case_id(Path("/in/..hidden.nii.gz")) == "hidden"
    assert safe_case_id(Path("/in/a b$c.png")) == "a_b_c"


def test_ranks_share_cases_without_overlap(
    mri_run: Path, scans: Path, runner, tmp_path: Path, monkeypatch
):
    cases = sorted(scans.iterdir())
    parts = [shard(cases, rank, 3) for rank in range(3)]
    flat = [p for part in parts for p in part]
    assert sorted(flat) == cases and len(set(flat)) == 4
    out = tmp_path / "sharded"
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        assert (
            invoke(
                runner, "predict", "--model", mri_run, "-i", scans, "-o", out, "--no-tta"
            ).exit_code
            == 0
        )
    assert sorted(p.name for p in out.glob("*.nii.gz")) == sorted(
        ["lps.nii.gz", "oblique.nii.gz", "pir.nii.gz", "plain.nii.gz"]
    )
    rows = [r for rank in (0, 1) for r in csv.DictReader((out / f"summary.rank{rank}.csv").open())]
    assert sorted(r["case_id"] for r in rows) == ["lps", "oblique", "pir", "plain"]


def test_dicom_series_folder_gives_a_nifti_mask_in_series_geometry(
    mri_run: Path, scans: Path, runner, tmp_path: Path
):
    from test_dicom import COLS, ROWS, SLICES, expected_ras, write_series

    inputs = tmp_path / "in"
    write_series(inputs / "patient7_ct")
    (inputs / "plain.nii").write_bytes((scans / "plain.nii").read_bytes())
    result = invoke(
        runner, "predict", "--model", mri_run, "-i", inputs, "-o", tmp_path / "out", "--no-tta"
    )
    assert result.exit_code == 0, result.output
    mask = nib.load(str(tmp_path / "out" / "patient7_ct.nii.gz"))
    assert mask.shape == (ROWS, COLS, SLICES)
    for voxel in [(0, 0, 0), (ROWS - 1, 0, 2), (3, COLS - 1, SLICES - 1)]:
        np.testing.assert_allclose(mask.affine @ [*voxel, 1], [*expected_ras(*voxel), 1], atol=1e-4)
    assert (tmp_path / "out" / "plain.nii.gz").is_file()


def test_torchrun_two_processes_split_the_batch(mri_run: Path, scans: Path, tmp_path: Path):
    """The real launcher: two CPU processes, each writing its share into one folder."""
    out = tmp_path / "torchrun"
    proc = run_torchrun(
        29531, "predict", "--model", mri_run, "-i", scans, "-o", out, "--no-tta", "--device", "cpu"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list(out.glob("*.nii.gz"))) == 4
    shares = [list(csv.DictReader((out / f"summary.rank{r}.csv").open())) for r in (0, 1)]
    assert [len(s) for s in shares] == [2, 2]


def test_export_command(mri_run: Path, runner, tmp_path: Path):
    result = invoke(
        runner,
        "export",
        "--model",
        mri_run,
        "--format",
        "torchscript",
        "--output",
        tmp_path / "model.ts",
    )
    assert result.exit_code == 0, result.output
    scripted = torch.jit.load(str(tmp_path / "model.ts"))
    assert scripted(torch.rand(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    assert (tmp_path / "model.ts.json").is_file()


def test_predict_then_evaluate_reproduces_the_validation_dice(
    mri_run: Path, tiny_msd: Path, runner, tmp_path: Path
):
    """The predict path (file in, mask out, default options) scores what training validated."""
    val_cases = json.loads((mri_run / "splits.json").read_text())["val"]
    inputs = [tiny_msd / "imagesTr" / f"{case}.nii.gz" for case in val_cases]
    folder = tmp_path / "val_images"
    folder.mkdir()
    for path in inputs:
        (folder / path.name).write_bytes(path.read_bytes())
    assert (
        invoke(runner, "predict", "--model", mri_run, "-i", folder, "-o", tmp_path / "p").exit_code
        == 0
    )
    result = invoke(
        runner,
        "evaluate",
        "--pred",
        tmp_path / "p",
        "--truth",
        tiny_msd / "labelsTr",
        "--labels",
        tiny_msd / "dataset.json",
        "--output",
        tmp_path / "m.csv",
        "--allow-missing",  # the training cases have labels but were not predicted
    )
    assert result.exit_code == 0, result.output
    predicted = float(list(csv.DictReader((tmp_path / "m.csv").open()))[-1]["mean_dice"])
    validated = float(list(csv.DictReader((mri_run / "metrics.csv").open()))[-1]["val_mean_dice"])
    assert validated > 0.005  # 0 == 0 would prove nothing (one epoch on 4 cases: a weak model)
    assert predicted == pytest.approx(validated, abs=1e-3)
