"""Geometry that sees content: a scan whose intensity encodes its label goes through the whole
predict path (read, reorient, resample, 2.5D stacks, padding, restore, write) and the mask must
match the known label map voxel by voxel on the input's own grid, for oblique, LPS and PIR
NIfTI, a volume that needs in-plane resampling, and an oblique DICOM series."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import write_nifti
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medgraft.config.schema import InferenceOptions, PredictOptions
from medgraft.data.transforms import Preprocessing
from medgraft.errors import MedgraftError
from medgraft.inference.batch import predict_cases
from medgraft.inference.predictor import VOLUME, Predictor
from medgraft.models.checkpoint import ModelInputs

LEVELS = (0.0, 500.0, 1000.0)
"""Raw intensity of background, label 1 and label 2; per-volume percentile scaling maps them
to 0, 0.5 and 1."""


class IntensityOracle(torch.nn.Module):
    """A "network" that labels each pixel of the centre slice by its intensity level, so a
    mask can only be wrong where the pipeline moved or mixed up voxels."""

    output_stride = 32
    num_classes = 3

    def forward(self, stacks: torch.Tensor) -> torch.Tensor:
        centre = stacks[:, stacks.shape[1] // 2]
        levels = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1)
        return -100.0 * (centre[:, None] - levels) ** 2


class VolumeOracle(torch.nn.Module):
    """The 3D counterpart: each voxel of a (N, 1, X, Y, Z) window labelled by its intensity."""

    output_stride = 16
    num_classes = 3

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        levels = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1, 1)
        return -100.0 * (windows - levels) ** 2


WINDOW = [16, 24, 8]
"""Smaller than the test volumes along some axes (windows slide and blend), larger along
others (MONAI pads and crops back)."""


def label_map(shape: tuple[int, int, int]) -> np.ndarray:
    """Two boxes and a bar on an asymmetric layout: any flip or transpose changes the map."""
    labels = np.zeros(shape, np.uint8)
    x, y, z = shape
    labels[2 : x // 2, 3 : y - 4, 1 : z - 1] = 1
    labels[x // 2 + 3 : x - 2, 2 : y // 3, : z // 2 + 1] = 2
    labels[x // 2 + 3 : x - 5, y // 2 :, z - 2 :] = 1
    return labels


class Background(torch.nn.Module):
    """A "network" sure that every pixel is background."""

    output_stride = 32
    num_classes = 3

    def forward(self, stacks: torch.Tensor) -> torch.Tensor:
        logits = torch.full((stacks.shape[0], 3, *stacks.shape[2:]), -100.0)
        logits[:, 0] = 100.0
        return logits


def oracle_inputs(spacing=None, dims: int = 2) -> ModelInputs:
    return ModelInputs(
        preprocessing=Preprocessing(volumetric=True, orientation="RAS", spacing=spacing),
        slices=3 if dims == 2 else 1,
        labels={"0": "background", "1": "a", "2": "b"},
        inference=InferenceOptions(tta=False),
        dims=dims,
        patch=WINDOW if dims == 3 else None,
    )


def predict_with_oracle(
    inputs: list[Path],
    out: Path,
    spacing,
    slice_axes: list[int | str] | None = None,
    dims: int = 2,
    **options,
) -> list:
    if dims == 3:
        slice_axes = slice_axes or [VOLUME]
    models = [VolumeOracle() if axis == VOLUME else IntensityOracle() for axis in slice_axes or [2]]
    predictor = Predictor(
        models, oracle_inputs(spacing, dims), device=torch.device("cpu"), slice_axes=slice_axes
    )
    settings = PredictOptions(tta=False, largest_component=False, min_size=0, **options)
    return list(predict_cases(predictor, inputs, out, settings))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    scores = [2 * ((a == v) & (b == v)).sum() / ((a == v).sum() + (b == v).sum()) for v in (1, 2)]
    return float(np.mean(scores))


AFFINES = {
    "oblique": np.array(
        [[0.0, -0.9, 0.1, 10.0], [1.1, 0.0, 0.0, -20.0], [0.0, 0.1, 2.0, 5.0], [0, 0, 0, 1]]
    ),
    "lps": np.diag([-1.0, -1.0, 1.5, 1.0]),
    "pir": np.array(
        [[0.0, 0.0, -1.2, 30.0], [-0.8, 0.0, 0.0, 12.0], [0.0, -1.0, 0.0, 7.0], [0, 0, 0, 1]]
    ),
    # 2 mm x 1 mm in-plane, 3 mm slices: resampled to 1 mm in-plane for the model and back
    "anisotropic": np.diag([2.0, 1.0, 3.0, 1.0]),
}


@pytest.mark.parametrize("dims", [2, 3], ids=["2.5D", "3D windows"])
@pytest.mark.parametrize("name", sorted(AFFINES))
def test_nifti_masks_match_the_known_labels_on_the_input_grid(name: str, dims: int, tmp_path: Path):
    """2.5D stacks, and a 3D model's sliding windows (which slide, blend and pad)."""
    shape = (30, 44, 9) if name != "pir" else (30, 9, 44)
    labels = label_map(shape)
    scan = tmp_path / "in" / f"{name}.nii.gz"
    scan.parent.mkdir()
    write_nifti(scan, np.choose(labels, LEVELS).astype(np.float32), AFFINES[name])
    spacing = (1.0, 1.0, 0.0) if name == "anisotropic" else None
    [result] = predict_with_oracle([scan], tmp_path / "out", spacing, dims=dims)
    assert result.status == "ok", result.message
    mask = nib.load(tmp_path / "out" / f"{name}.nii.gz")
    np.testing.assert_allclose(mask.affine, AFFINES[name], atol=1e-5)
    assert dice(np.asarray(mask.dataobj), labels) >= 0.99


def test_3d_mirroring_tta_flips_every_axis_and_back():
    """With flips trained, TTA averages the 8 mirrorings of a 3D window: an oracle that
    labels voxels by intensity must give the same labels as without TTA."""
    image = torch.from_numpy(np.choose(label_map((20, 26, 9)), (0.0, 0.5, 1.0)))[None].float()
    inputs = replace(oracle_inputs(dims=3), mirror_axes=[-3, -2, -1])
    plain = Predictor([VolumeOracle()], inputs, device=torch.device("cpu"))
    mirrored = Predictor([VolumeOracle()], inputs, device=torch.device("cpu"), tta=True)
    assert len(mirrored.flips) == 8
    torch.testing.assert_close(mirrored.segment(image).labels, plain.segment(image).labels)


@pytest.mark.parametrize(
    "slice_axes",
    [[0], [1], [2, 0, 1], [VOLUME, 2, 0]],
    ids=["sagittal", "coronal", "3 views", "3D and 2 views"],
)
def test_each_view_and_their_ensemble_give_the_known_labels(slice_axes, tmp_path: Path):
    labels = label_map((30, 9, 44))
    scan = tmp_path / "in" / "pir.nii.gz"
    scan.parent.mkdir()
    write_nifti(scan, np.choose(labels, LEVELS).astype(np.float32), AFFINES["pir"])
    [result] = predict_with_oracle([scan], tmp_path / "out", None, slice_axes=slice_axes)
    assert result.status == "ok", result.message
    mask = np.asarray(nib.load(tmp_path / "out" / "pir.nii.gz").dataobj)
    assert dice(mask, labels) >= 0.99
    ras_shape = nib.as_closest_canonical(nib.load(scan)).shape
    assert result.slices == sum(ras_shape[axis] for axis in set(slice_axes) - {VOLUME})


def test_views_are_averaged_by_their_number_of_models():
    image = torch.from_numpy(np.choose(label_map((12, 10, 8)), (0.0, 0.5, 1.0)))[None].float()
    oracle, background = IntensityOracle(), Background()
    predictor = Predictor(
        [oracle, oracle, background],
        oracle_inputs(),
        device=torch.device("cpu"),
        slice_axes=[0, 0, 2],
    )
    mixed = predictor.segment(image, keep_probabilities=True)
    alone = Predictor([oracle], oracle_inputs(), device=torch.device("cpu")).segment(
        image, keep_probabilities=True
    )
    expected = alone.probabilities.float() * 2 / 3
    expected[0] += 1 / 3
    torch.testing.assert_close(mixed.probabilities.float(), expected, atol=2e-3, rtol=0)
    assert mixed.slices == 12 + 8


def write_dicom_series(folder: Path, volume: np.ndarray) -> None:
    """An oblique series: ``volume[i, j, k]`` is row i, column j of slice k (uint16)."""
    row_dir, col_dir = np.array([0.6, 0.8, 0.0]), np.array([-0.48, 0.36, -0.8])
    normal, series_uid, study_uid = np.cross(row_dir, col_dir), generate_uid(), generate_uid()
    frame_of_reference = generate_uid()
    folder.mkdir()
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR image storage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"s{k}"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
        ds.Modality, ds.SeriesInstanceUID, ds.InstanceNumber = "MR", series_uid, k + 1
        ds.StudyInstanceUID, ds.FrameOfReferenceUID = study_uid, frame_of_reference
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "p1", "Test^P", "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
        ds.ReferringPhysicianName, ds.SeriesNumber = "", 3
        ds.ImagePositionPatient = [f"{v:g}" for v in np.array([5.0, -3.0, 2.0]) + 2.0 * k * normal]
        ds.ImageOrientationPatient = [f"{v:g}" for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = ["0.9", "0.9"]
        ds.Rows, ds.Columns = volume.shape[:2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(volume[:, :, k]).tobytes()
        ds.save_as(str(folder / f"s{k}"))


def test_dicom_series_mask_matches_the_known_labels(tmp_path: Path):
    labels = label_map((32, 40, 8))
    write_dicom_series(tmp_path / "series", np.choose(labels, LEVELS).astype(np.uint16))
    [result] = predict_with_oracle([tmp_path / "series"], tmp_path / "out", None)
    assert result.status == "ok", result.message
    mask = np.asarray(nib.load(tmp_path / "out" / "series.nii.gz").dataobj)
    assert dice(mask, labels) >= 0.99


def test_dicom_seg_references_each_source_slice_and_holds_the_known_labels(tmp_path: Path):
    import highdicom as hd
    import pydicom

    labels = label_map((32, 40, 8))
    write_dicom_series(tmp_path / "series", np.choose(labels, LEVELS).astype(np.uint16))
    [result] = predict_with_oracle(
        [tmp_path / "series"], tmp_path / "out", None, output_format="dicom-seg"
    )
    assert result.status == "ok", result.message
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["series_seg.dcm"]
    seg = hd.seg.segread(tmp_path / "out" / "series_seg.dcm")
    assert [d.SegmentLabel for d in seg.SegmentSequence] == ["a", "b"]
    sources = {
        ds.SOPInstanceUID: ds
        for ds in (pydicom.dcmread(p) for p in (tmp_path / "series").iterdir())
    }
    assert {uid for _, _, uid in seg.get_source_image_uids()} == set(sources)
    volume = np.zeros(labels.shape, np.uint8)
    for frame, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        source = sources[item.DerivationImageSequence[0].SourceImageSequence[0]
                         .ReferencedSOPInstanceUID]  # fmt: skip
        position = item.PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose(position, source.ImagePositionPatient, atol=1e-3)
        segment = item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        k = int(source.InstanceNumber) - 1  # slice k of the written volume
        volume[..., k][seg.pixel_array[frame] > 0] = segment
    assert dice(volume, labels) >= 0.99


def test_dicom_seg_of_a_nifti_input_is_refused_before_any_work(tmp_path: Path):
    scan = tmp_path / "in" / "ct.nii.gz"
    scan.parent.mkdir()
    write_nifti(scan, np.zeros((8, 8, 4), np.float32))
    with pytest.raises(MedgraftError, match="dicom-seg takes only dicom-series inputs"):
        predict_with_oracle([scan], tmp_path / "out", None, output_format="dicom-seg")
    assert not (tmp_path / "out").exists()


def test_the_check_sees_a_flipped_mask(tmp_path: Path):
    """The comparison above fails for a mask that is right in shape and header but flipped."""
    labels = label_map((30, 44, 9))
    assert dice(labels[::-1], labels) < 0.9 and dice(labels[:, ::-1], labels) < 0.9
