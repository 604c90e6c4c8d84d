"""Every input a user can get wrong gives one line naming the file and what is wrong.

``medgraft train`` stops with exit status 1 before any training (no traceback); ``medgraft
predict`` marks the case failed in summary.csv and the log, finishes the batch and exits 1.
Grey, grey + alpha, RGBA and 16-bit 2D images are not errors: they must just work.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import disk_image, invoke, write_nifti
from PIL import Image

from medgraft.data.discovery import discover_dataset
from medgraft.data.splits import split_cases
from medgraft.data.transforms import Preprocessing, case_transforms
from medgraft.errors import MedgraftError

Breaker = Callable[[Path, dict[str, Path]], Path]
"""Breaks one input under a folder (dataset root or predict input); returns the offending path."""


@dataclass(frozen=True)
class Row:
    kind: str
    command: str
    """``train-3d``/``train-2d`` (one case of a small dataset broken) or ``predict-3d``/
    ``predict-2d`` (one bad file next to a good one)."""
    breaks: Breaker
    fragment: str | None
    """Expected part of the message (case-insensitive); None: the input must work."""
    outcome: str = "failed"
    """Predict only: ``failed`` (case fails, batch goes on), ``error`` (the command refuses),
    ``ok`` (the case is segmented)."""
    output: str = "out"
    """Predict output folder, relative to the test folder (the input folder is ``in``)."""
    good_case: bool = True
    subprocess: bool = False


def zero_bytes(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def text(path: Path) -> Path:
    path.write_text("this is not an image\n")
    return path


def delete(path: Path) -> Path:
    path.unlink()
    return path


def rewrite_nifti(
    path: Path, change: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
) -> Path:
    """Rewrite ``path`` with ``change(array, affine)`` applied."""
    source = nib.load(str(path))
    array, affine = change(np.asarray(source.dataobj), source.affine.copy())
    write_nifti(path, array, affine)
    return path


def with_value(value: float) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    def change(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        array = array.astype(np.float32)
        array.flat[7] = value
        return array, affine

    return change


def shifted(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    affine[0, 3] += 2.0  # same shape, 2 mm apart
    return array, affine


def stray_label(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    array = array.copy()
    array.flat[:3] = 7
    return array, affine


def malformed_manifest(root: Path, case: dict[str, Path]) -> Path:
    (root / "dataset.json").write_text('{"training": [')
    return root / "dataset.json"


def edit_manifest(root: Path, change: Callable[[dict], None]) -> Path:
    manifest = json.loads((root / "dataset.json").read_text())
    change(manifest)
    (root / "dataset.json").write_text(json.dumps(manifest))
    return root / "dataset.json"


def nifti_next_to(folder: Path, array: np.ndarray) -> Path:
    write_nifti(folder / "bad.nii.gz", array, np.diag([1.2, 1.0, 1.5, 1.0]))
    return folder / "bad.nii.gz"


def good_volume(case: dict[str, Path]) -> np.ndarray:
    return np.asarray(nib.load(str(case["image"])).dataobj).astype(np.float32)


def png_like(folder: Path, case: dict[str, Path], name: str, mode: str) -> Path:
    """The good RGB image saved in another PIL mode (``I;16``: 16-bit grey, full range)."""
    rgb = Image.open(case["image"])
    image = (
        Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
        if mode == "I;16"
        else rgb.convert(mode)
    )
    image.save(folder / name)
    return folder / name


def rgb_png(folder: Path, case: dict[str, Path]) -> Path:
    rgb, _ = disk_image((24, 24), (12, 12), 5, seed=0)
    Image.fromarray(rgb).save(folder / "bad.png")
    return folder / "bad.png"


def unsupported_only(folder: Path, case: dict[str, Path]) -> Path:
    (folder / "scan.mha").write_bytes(b"ObjectType = Image\n")
    (folder / "notes.txt").write_text("scan notes\n")
    return folder


def mixed_kinds(root: Path, case: dict[str, Path]) -> Path:
    write_nifti(root / "images" / "zz.nii.gz", np.zeros((8, 8, 4), np.float32))
    write_nifti(root / "masks" / "zz.nii.gz", np.zeros((8, 8, 4), np.uint8))
    return root / "images" / "zz.nii.gz"


def smaller_mask(root: Path, case: dict[str, Path]) -> Path:
    Image.open(case["label"]).resize((20, 16)).save(case["label"])
    return case["label"]


ROWS = [
    # train: one case of a small MSD (or images/ + masks/) dataset broken
    Row("zero-byte image", "train-3d", lambda r, c: zero_bytes(c["image"]), "empty"),
    Row("zero-byte label", "train-3d", lambda r, c: zero_bytes(c["label"]), "file is empty"),
    Row(
        "truncated .nii.gz",
        "train-3d",
        lambda r, c: truncate(c["image"]),
        "not a readable NIfTI file (compressed file ended",
    ),
    Row("text in .nii.gz", "train-3d", lambda r, c: text(c["image"]), "not a gzip file"),
    Row(
        "4D NIfTI image",
        "train-3d",
        lambda r, c: rewrite_nifti(c["image"], lambda a, m: (np.stack([a, a], -1), m)),
        "4D file with 2 volumes",
    ),
    Row(
        "2D NIfTI in a 3D dataset",
        "train-3d",
        lambda r, c: rewrite_nifti(c["image"], lambda a, m: (a[:, :, 0], m)),
        "expected a 3D volume, got shape (48, 48)",
    ),
    Row(
        "NaN voxel",
        "train-3d",
        lambda r, c: rewrite_nifti(c["image"], with_value(np.nan)),
        "NaN or infinite",
    ),
    Row(
        "Inf voxel",
        "train-3d",
        lambda r, c: rewrite_nifti(c["image"], with_value(np.inf)),
        "NaN or infinite",
    ),
    Row(
        "label value outside the dataset's labels",
        "train-3d",
        lambda r, c: rewrite_nifti(c["label"], stray_label),
        "label values [7] (3 voxels) are not in the dataset's labels [0, 1, 2]",
    ),
    Row(
        "non-integer label",
        "train-3d",
        lambda r, c: rewrite_nifti(c["label"], with_value(0.5)),
        "non-integer values (e.g. 0.5)",
    ),
    Row(
        "image/label shape mismatch",
        "train-3d",
        lambda r, c: rewrite_nifti(c["label"], lambda a, m: (a[:-4], m)),
        "label shape (44, 48, 16) != image shape (48, 48, 16)",
    ),
    Row(
        "image/label affine mismatch",
        "train-3d",
        lambda r, c: rewrite_nifti(c["label"], shifted),
        "label affine differs from the image's",
        subprocess=True,
    ),
    Row(
        "dataset.json lists a missing file",
        "train-3d",
        lambda r, c: delete(c["label"]),
        "dataset.json but not found",
    ),
    Row("malformed dataset.json", "train-3d", malformed_manifest, "not valid JSON"),
    Row(
        "dataset.json entry without 'label'",
        "train-3d",
        lambda r, c: edit_manifest(r, lambda m: m["training"][0].pop("label")),
        "training entry 0 needs 'image' and 'label'",
    ),
    Row(
        "dataset.json without 'training'",
        "train-3d",
        lambda r, c: edit_manifest(r, lambda m: m.pop("training")),
        "dataset.json needs 'training'",
    ),
    Row("text in .png", "train-2d", lambda r, c: text(c["image"]), "cannot identify image file"),
    Row("2D mask size mismatch", "train-2d", smaller_mask, "label shape (16, 20) != image shape"),
    Row("NIfTI in a 2D dataset", "train-2d", mixed_kinds, "mixes 3D NIfTI volumes and 2D images"),
    # predict: one bad file next to a good one
    Row(
        "zero-byte .nii.gz",
        "predict-3d",
        lambda f, c: zero_bytes(f / "bad.nii.gz"),
        "file is empty (0 bytes)",
    ),
    Row(
        "truncated .nii.gz",
        "predict-3d",
        lambda f, c: truncate(shutil.copy(c["image"], f / "bad.nii.gz")),
        "not a readable NIfTI file",
    ),
    Row("text in .nii.gz", "predict-3d", lambda f, c: text(f / "bad.nii.gz"), "not a gzip file"),
    Row("text in .png", "predict-2d", lambda f, c: text(f / "bad.png"), "cannot identify image"),
    Row(
        "4D NIfTI",
        "predict-3d",
        lambda f, c: nifti_next_to(f, np.stack([good_volume(c)] * 2, -1)),
        "4D file with 2 volumes of shape (48, 48, 16); expected one 3D volume",
    ),
    Row(
        "2D NIfTI, 3D model",
        "predict-3d",
        lambda f, c: nifti_next_to(f, good_volume(c)[:, :, 0]),
        "expected a 3D volume, got shape (48, 48)",
    ),
    Row(
        "NIfTI volume, 2D model",
        "predict-2d",
        lambda f, c: nifti_next_to(f, np.zeros((8, 8, 4), np.float32)),
        "this model segments 2D images",
    ),
    Row(
        "PNG, 3D model",
        "predict-3d",
        rgb_png,
        "this model segments 3D NIfTI volumes",
    ),
    Row(
        "NaN voxel",
        "predict-3d",
        lambda f, c: nifti_next_to(f, with_value(np.nan)(good_volume(c), np.eye(4))[0]),
        "NaN or infinite",
    ),
    Row(
        "only unsupported files (.mha, .txt)",
        "predict-3d",
        unsupported_only,
        "no NIfTI, DICOM series or 2D image files found (2 other file(s), e.g. notes.txt",
        outcome="error",
        good_case=False,
    ),
    Row(
        "empty input folder",
        "predict-3d",
        lambda f, c: f,
        "folder is empty",
        outcome="error",
        good_case=False,
    ),
    Row(
        "output folder inside the input folder",
        "predict-3d",
        lambda f, c: f,
        "must not be inside the input folder",
        outcome="error",
        output="in/masks",
    ),
    Row(
        "output folder equal to the input folder",
        "predict-3d",
        lambda f, c: f,
        "must not be inside the input folder",
        outcome="error",
        output="in",
    ),
    Row("grey PNG", "predict-2d", lambda f, c: png_like(f, c, "grey.png", "L"), None, "ok"),
    Row("grey + alpha PNG", "predict-2d", lambda f, c: png_like(f, c, "la.png", "LA"), None, "ok"),
    Row("RGBA PNG", "predict-2d", lambda f, c: png_like(f, c, "rgba.png", "RGBA"), None, "ok"),
    Row("16-bit PNG", "predict-2d", lambda f, c: png_like(f, c, "u16.png", "I;16"), None, "ok"),
]


def _train(runner, data: Path, run: Path, *extra: str):
    common = ("--epochs", "1", "--weights", "none")
    return invoke(
        runner, "train", "--recipe", "none", "--data", data, "--output", run, *common, *extra
    )


@pytest.fixture(scope="module")
def model_3d(micro_msd: Path, runner, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("bad_inputs_3d") / "run"
    result = _train(runner, micro_msd, run, "--batch-size", "16")
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="module")
def model_2d(runner, tmp_path_factory) -> Path:
    """Trained on RGB, grey, RGBA and 16-bit PNGs: training accepts all of them."""
    root = tmp_path_factory.mktemp("bad_inputs_2d")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i, mode in enumerate(("RGB", "L", "RGBA", "I;16")):
        rgb, mask = disk_image((32, 32), (16, 14 + i), 7, seed=i)
        Image.fromarray(rgb).save(root / "rgb.png")
        png_like(root / "images", {"image": root / "rgb.png"}, f"case{i}.png", mode)
        Image.fromarray(mask).save(root / "masks" / f"case{i}.png")
    run = root / "run"
    result = _train(runner, root, run, "--image-size", "32", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    return run


def _training_case(root: Path) -> dict[str, Path]:
    """A case of the default training split, so the whole default path meets the bad file."""
    spec = discover_dataset(root)
    record = split_cases(spec.training, 0.2, 0)[0][0]
    return {"image": Path(record.image), "label": Path(record.label)}


def _tail(path: Path) -> str:
    """How a message names ``path`` whatever the absolute prefix (resolved or not)."""
    return f"{path.parent.name}/{path.name}"


PARAMS = [
    pytest.param(
        row,
        id=f"{row.command}:{row.kind}",
        # predict rows need a trained model; subprocess rows start Python anew
        marks=[pytest.mark.slow] * (row.subprocess or row.command.startswith("predict")),
    )
    for row in ROWS
]


@pytest.mark.parametrize("row", PARAMS)
def test_bad_input(row: Row, request, runner, tmp_path: Path, record_property):
    if row.command.startswith("train"):
        message = _check_train(row, request, runner, tmp_path)
    else:
        message = _check_predict(row, request, runner, tmp_path)
    record_property("message", message)
    if row.fragment is not None:
        assert "\n" not in message and row.fragment.lower() in message.lower(), message


def _check_train(row: Row, request, runner, tmp_path: Path) -> str:
    source = request.getfixturevalue("micro_msd" if row.command == "train-3d" else "tiny_2d")
    root = tmp_path / "data"
    shutil.copytree(source, root)
    offending = row.breaks(root, _training_case(root))
    run = tmp_path / "run"
    if row.subprocess:
        command = [
            sys.executable,
            "-m",
            "medgraft",
            "train",
            "--recipe",
            "none",
            "--data",
            str(root),
        ]
        proc = subprocess.run(
            [*command, "--output", str(run), "--epochs", "1", "--weights", "none"],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
        assert [line for line in lines if line.startswith("error: ")] == lines[-1:], lines
        message = lines[-1].removeprefix("error: ")
    else:
        result = _train(runner, root, run)
        assert result.exit_code == 1 and isinstance(result.exception, MedgraftError), result.output
        message = str(result.exception)
    assert _tail(offending) in message
    if "affine" in row.kind:
        assert _tail(_training_case(root)["image"]) in message  # names both files
    assert not (run / "last.pt").exists()
    return message


def _check_predict(row: Row, request, runner, tmp_path: Path) -> str:
    volumetric = row.command == "predict-3d"
    model = request.getfixturevalue("model_3d" if volumetric else "model_2d")
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = inputs / ("good.nii.gz" if volumetric else "good.png")
    source = _training_case(request.getfixturevalue("micro_msd" if volumetric else "tiny_2d"))
    if row.good_case:
        shutil.copy(source["image"], good)
    offending = row.breaks(inputs, {"image": good if row.good_case else source["image"]})
    out = tmp_path / row.output
    result = invoke(runner, "predict", "--model", model, "-i", inputs, "-o", out, "--no-tta")
    if row.outcome == "error":
        assert result.exit_code == 1 and isinstance(result.exception, MedgraftError), result.output
        message = str(result.exception)
        assert _tail(offending) in message
        assert not (out / "summary.csv").exists()
        return message
    rows = {r["input"]: r for r in csv.DictReader((out / "summary.csv").open())}
    assert rows[str(good)]["status"] == "ok" and Path(rows[str(good)]["output"]).is_file()
    bad = rows[str(offending)]
    if row.outcome == "ok":
        assert result.exit_code == 0, result.output
        assert bad["status"] == "ok"
        mask = np.asarray(Image.open(bad["output"]))
        assert mask.shape == Image.open(offending).size[::-1]
        return "works: " + bad["output"].rsplit("/", 1)[-1] + " written"
    assert result.exit_code == 1, result.output
    assert bad["status"] == "failed" and bad["output"] == ""
    assert f"failed: {bad['message']}" in result.output  # the log line
    assert _tail(offending) in bad["message"]
    return bad["message"]


@pytest.mark.slow
def test_debug_flag_shows_the_traceback(micro_msd: Path, tmp_path: Path):
    root = tmp_path / "data"
    shutil.copytree(micro_msd, root)
    rewrite_nifti(_training_case(root)["label"], shifted)
    command = [
        sys.executable,
        "-m",
        "medgraft",
        "--debug",
        "train",
        "--recipe",
        "none",
        "--data",
        str(root),
    ]
    proc = subprocess.run(
        [*command, "--output", str(tmp_path / "run"), "--weights", "none"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "MedgraftError: " in proc.stderr


def test_16_bit_images_keep_their_contrast(tmp_path: Path):
    """A 16-bit grey value v * 257 means what the 8-bit value v means, not white."""
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(grey).save(tmp_path / "u8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "u16.png")
    Image.fromarray(grey.astype(np.float32) * 3.0 - 100.0).save(tmp_path / "f32.tif")
    prep = Preprocessing(volumetric=False)
    out = {
        name: case_transforms(prep, with_label=False)({"image": str(tmp_path / name)})["image"]
        for name in ("u8.png", "u16.png", "f32.tif")
    }
    torch.testing.assert_close(out["u16.png"], out["u8.png"])
    torch.testing.assert_close(out["f32.tif"], out["u8.png"])  # no full scale: min-max
    assert out["u8.png"].shape == (3, 16, 16) and float(out["u8.png"].max()) == 1.0
