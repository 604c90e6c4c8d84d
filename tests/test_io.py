"""The format registry: every reader and writer is found through ``data.io.FORMATS``, so a new
format is one entry there, and training and ``medgraft predict`` take it without other changes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import invoke, write_nifti
from monai.data import MetaTensor

from medgraft.data import io
from medgraft.data.discovery import discover_dataset
from medgraft.errors import MedgraftError
from medgraft.inference.batch import input_cases
from medgraft.models.checkpoint import load_checkpoint


def test_each_builtin_kind_has_its_format(tmp_path: Path, tiny_2d: Path, demo_dir: Path):
    volume = next((demo_dir / "imagesTr").glob("*.nii.gz"))
    image = next((tiny_2d / "images").glob("*.png"))
    assert io.format_of(volume).name == "nifti" and io.is_volume(volume)
    assert io.format_of(image).name == "image-2d" and not io.is_volume(image)
    assert io.read_scan(volume).shape[0] == 1 and io.read_scan(image).shape[0] == 3
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(MedgraftError, match="not a file medgraft reads"):
        io.format_of(tmp_path / "notes.txt")
    with pytest.raises(MedgraftError, match="file not found"):
        io.format_of(tmp_path / "absent.nii.gz")
    assert io.list_images(tmp_path) == []


def _read_npy(path: Path) -> MetaTensor:
    """A volume stored as a bare .npy array, 1 mm isotropic (a made-up lab format)."""
    return MetaTensor(
        torch.from_numpy(np.load(path))[None].float(),
        affine=torch.eye(4, dtype=torch.float64),
        meta={"filename_or_obj": str(path)},
    )


NPY = io.ScanFormat(
    name="npy",
    volumetric=True,
    read=_read_npy,
    geometry=lambda path, image: io.ScanGeometry(affine=np.eye(4)),
    mask_suffix=".nii.gz",
    write_mask=io.write_nifti_mask,
    write_probabilities=io.write_nifti_probabilities,
    probabilities_suffix="_probabilities.nii.gz",
    suffixes=(".npy",),
)


@pytest.fixture
def npy_registered(monkeypatch):
    monkeypatch.setattr(io, "FORMATS", [*io.FORMATS, NPY])


@pytest.fixture
def npy_dataset(tmp_path: Path, micro_msd: Path) -> Path:
    """The micro hippocampus cases as images/ + labels/ of .npy files (identity affine)."""
    root = tmp_path / "npy"
    for record in discover_dataset(micro_msd).training:
        for folder, path in (("images", record.image), ("labels", record.label)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            array = np.asarray(nib.load(path).dataobj)
            np.save(root / folder / f"{record.case_id}.npy", array)
    return root


def test_a_registered_format_is_listed_read_and_found_by_predict(npy_registered, npy_dataset):
    spec = discover_dataset(npy_dataset)
    assert len(spec.training) == 4 and spec.is_volumetric
    assert input_cases(npy_dataset / "images") == sorted((npy_dataset / "images").glob("*.npy"))
    scan = io.read_scan(spec.training[0].image)
    assert scan.ndim == 4 and scan.affine.tolist() == np.eye(4).tolist()


@pytest.mark.slow
def test_training_and_predict_take_a_registered_format(
    npy_registered, npy_dataset: Path, runner, tmp_path: Path
):
    run = tmp_path / "run"
    trained = invoke(
        runner, "train", "--recipe", "none",
        "--data", npy_dataset, "--output", run, "--epochs", "1",
        "--batch-size", "8", "--val-fraction", "0.25", "--samples-per-epoch", "16",
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    assert load_checkpoint(run).inputs.volumetric
    out = tmp_path / "masks"
    predicted = invoke(runner, "predict", "--model", run, "-i", npy_dataset / "images", "-o", out)
    assert predicted.exit_code == 0, predicted.output
    for image in sorted((npy_dataset / "images").glob("*.npy")):
        mask = nib.load(out / f"{image.stem}.nii.gz")
        assert mask.shape == np.load(image).shape
        np.testing.assert_array_equal(mask.affine, np.eye(4))


def test_written_masks_keep_the_nifti_header(tmp_path: Path):
    affine = np.diag([-0.7, 0.8, 2.5, 1.0])
    write_nifti(tmp_path / "scan.nii.gz", np.zeros((4, 5, 6), np.float32), affine)
    nifti = io.format_of(tmp_path / "scan.nii.gz")
    geometry = nifti.geometry(tmp_path / "scan.nii.gz", io.read_scan(tmp_path / "scan.nii.gz"))
    assert geometry.voxel_ml == pytest.approx(0.7 * 0.8 * 2.5 / 1000)
    mask = np.ones((4, 5, 6), np.uint8)
    nifti.write_mask(mask, geometry, tmp_path / "mask.nii.gz")
    written = nib.load(tmp_path / "mask.nii.gz")
    np.testing.assert_allclose(written.affine, affine)
    assert written.get_data_dtype() == np.uint8
    assert io.read_geometry(tmp_path / "scan.nii.gz").zooms == pytest.approx((0.7, 0.8, 2.5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz", "scan.nii.gz"]
