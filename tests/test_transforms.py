from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_nifti
from PIL import Image

from medgraft.data.transforms import Preprocessing, apply_case_transforms, case_transforms
from medgraft.errors import MedgraftError

VOLUME = Preprocessing(volumetric=True)
IMAGE_2D = Preprocessing(volumetric=False)


def test_volume_intensity_is_scaled_to_unit_range(tmp_path: Path):
    rng = np.random.default_rng(0)
    write_nifti(tmp_path / "img.nii.gz", (rng.normal(500, 80, (8, 8, 6))).astype(np.float32))
    write_nifti(tmp_path / "lbl.nii.gz", (rng.random((8, 8, 6)) > 0.5).astype(np.uint8))
    out = case_transforms(VOLUME, with_label=True, allowed_labels=[0, 1])(
        {"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "lbl.nii.gz")}
    )
    assert out["image"].shape == (1, 8, 8, 6)
    assert float(out["image"].min()) == 0.0 and float(out["image"].max()) == 1.0
    assert out["label"].dtype == torch.int64


def test_label_outside_declared_set_names_file_value_and_count(tmp_path: Path):
    label = np.zeros((6, 6, 4), np.uint8)
    label[0, 0, :3] = 7
    write_nifti(
        tmp_path / "img.nii.gz", np.random.default_rng(1).random((6, 6, 4)).astype(np.float32)
    )
    write_nifti(tmp_path / "bad_label.nii.gz", label)
    with pytest.raises(MedgraftError, match=r"bad_label.nii.gz: label values \[7\] \(3 voxels\)"):
        apply_case_transforms(
            case_transforms(VOLUME, with_label=True, allowed_labels=[0, 1, 2]),
            {"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "bad_label.nii.gz")},
        )


def test_non_integer_labels_are_refused(tmp_path: Path):
    write_nifti(
        tmp_path / "img.nii.gz", np.random.default_rng(2).random((4, 4, 4)).astype(np.float32)
    )
    write_nifti(tmp_path / "soft.nii.gz", np.full((4, 4, 4), 0.5, np.float32))
    with pytest.raises(MedgraftError, match=r"soft\.nii\.gz: label map has non-integer values"):
        apply_case_transforms(
            case_transforms(VOLUME, with_label=True, allowed_labels=[0, 1]),
            {"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "soft.nii.gz")},
        )


def test_2d_png_rows_stay_rows_and_byte_masks_become_binary(tmp_path: Path):
    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[:3] = 255  # top rows bright
    mask = np.zeros((10, 20), np.uint8)
    mask[:3] = 255
    Image.fromarray(rgb).save(tmp_path / "i.png")
    Image.fromarray(mask).convert("RGB").save(tmp_path / "m.png")
    out = case_transforms(IMAGE_2D, with_label=True, allowed_labels=[0, 1])(
        {"image": str(tmp_path / "i.png"), "label": str(tmp_path / "m.png")}
    )
    assert out["image"].shape == (3, 10, 20)  # (C, H, W), not MONAI's default (W, H)
    assert torch.all(out["image"][:, :3] == 1.0) and torch.all(out["image"][:, 3:] == 0.0)
    assert out["label"].shape == (1, 10, 20)
    assert set(torch.unique(out["label"]).tolist()) == {0, 1}


def test_grayscale_2d_becomes_three_channels(tmp_path: Path):
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(tmp_path / "g.png")
    out = case_transforms(IMAGE_2D, with_label=False)({"image": str(tmp_path / "g.png")})
    assert out["image"].shape == (3, 8, 8)


def test_slabwise_spacing_matches_whole_volume_spacing_and_inverts(tmp_path: Path):
    """Slab-by-slab in-plane resampling (bounded memory) gives the voxels whole-volume MONAI
    Spacingd gives, and its inverse brings labels back onto the input grid."""
    from monai.data import MetaTensor
    from monai.transforms import Invertd, Spacingd

    from medgraft.data.resample import SLAB_DEPTH, SlabwiseSpacing

    depth = 2 * SLAB_DEPTH + 5
    rng = np.random.default_rng(0)
    rotation = np.array([[0.0, -1.0, 0.0], [0.96, 0.0, 0.28], [0.28, 0.0, -0.96]])
    affine = np.eye(4)
    affine[:3, :3] = rotation * [0.7, 0.8, 2.5]
    affine[:3, 3] = [10.0, -4.0, 30.0]
    volume = MetaTensor(
        torch.as_tensor(rng.normal(size=(1, 23, 19, depth)), dtype=torch.float32),
        affine=torch.as_tensor(affine),
    )
    spacing = (1.1, 0.5, 0.0)
    whole_spacing = Spacingd("image", pixdim=spacing, mode="bilinear")
    whole = whole_spacing({"image": volume})["image"]
    slabwise = SlabwiseSpacing(spacing)
    slabs = slabwise(volume)
    assert slabs.shape == whole.shape
    assert torch.allclose(slabs.as_tensor(), whole.as_tensor(), atol=1e-5)
    assert np.allclose(slabs.affine, whole.affine)

    labels = (slabs > 0.5).to(torch.uint8)
    restored = slabwise.inverse(labels.as_tensor(), nearest=True)
    assert restored.shape == volume.shape and restored.dtype == torch.uint8
    whole_labels = MetaTensor(
        labels.as_tensor(), meta=whole.meta, applied_operations=whole.applied_operations
    )
    invert = Invertd("pred", whole_spacing, orig_keys="image", nearest_interp=True)
    expected = invert({"image": whole, "pred": whole_labels})["pred"]
    assert torch.equal(restored, torch.as_tensor(expected).to(torch.uint8))
