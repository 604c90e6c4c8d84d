"""DICOM series reading, checked against geometry worked out by hand from the tags we write."""

from __future__ import annotations

import random
import re
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medgraft.data.dicom import is_dicom_series, read_dicom_series
from medgraft.errors import MedgraftError

ROWS, COLS, SLICES = 12, 10, 5
ROW_DIR = np.array([0.6, 0.8, 0.0])  # ImageOrientationPatient[:3], oblique
COL_DIR = np.array([-0.48, 0.36, -0.8])  # ImageOrientationPatient[3:]
NORMAL = np.array([-0.64, 0.48, 0.6])  # ROW_DIR x COL_DIR, worked out by hand
PIXEL_SPACING = (0.8, 0.7)  # between rows, between columns (mm)
# ImagePositionPatient of each slice: origin + k * 2.5 mm * NORMAL, written out by hand (LPS)
POSITIONS = np.array(
    [
        [-12.5, 30.25, 7.0],
        [-14.1, 31.45, 8.5],
        [-15.7, 32.65, 10.0],
        [-17.3, 33.85, 11.5],
        [-18.9, 35.05, 13.0],
    ]
)
SLOPE, INTERCEPT = 2, -100
SOP_CLASS_CT = "1.2.840.10008.5.1.4.1.1.2"


def stored_pixels(k: int) -> np.ndarray:
    """Distinct stored value for every voxel: 200 * slice + 10 * row + column + 1."""
    rows, cols = np.meshgrid(np.arange(ROWS), np.arange(COLS), indexing="ij")
    return (200 * k + 10 * rows + cols + 1).astype(np.uint16)


def write_slice(path: Path, k: int, series_uid: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASS_CT
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SOP_CLASS_CT
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series_uid
    ds.InstanceNumber = SLICES - k  # numbered against the geometry: order must come from IPP
    ds.ImagePositionPatient = [f"{v:g}" for v in POSITIONS[k]]
    ds.ImageOrientationPatient = [f"{v:g}" for v in (*ROW_DIR, *COL_DIR)]
    ds.PixelSpacing = [f"{v:g}" for v in PIXEL_SPACING]
    ds.SliceThickness = "2.5"
    ds.RescaleSlope = str(SLOPE)
    ds.RescaleIntercept = str(INTERCEPT)
    ds.Rows, ds.Columns = ROWS, COLS
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = stored_pixels(k).tobytes()
    ds.save_as(str(path))


def write_series(folder: Path, slices=range(SLICES), seed: int = 0) -> list[Path]:
    """Slices written in shuffled order under random extension-less names."""
    folder.mkdir(parents=True, exist_ok=True)
    order = list(slices)
    random.Random(seed).shuffle(order)
    series_uid = generate_uid()
    paths = []
    for k in order:
        paths.append(folder / uuid.uuid4().hex)
        write_slice(paths[-1], k, series_uid)
    return paths


def expected_ras(i: int, j: int, k: int) -> np.ndarray:
    """DICOM PS3.3 C.7.6.2.1.1: row index i moves along the column direction, then LPS -> RAS."""
    lps = POSITIONS[k] + i * PIXEL_SPACING[0] * COL_DIR + j * PIXEL_SPACING[1] * ROW_DIR
    return lps * np.array([-1.0, -1.0, 1.0])


@pytest.fixture
def series(tmp_path: Path) -> Path:
    write_series(tmp_path / "series")
    return tmp_path / "series"


def test_hand_worked_geometry_is_consistent():
    assert np.allclose(np.cross(ROW_DIR, COL_DIR), NORMAL)
    assert np.allclose(np.diff(POSITIONS, axis=0), 2.5 * NORMAL)


def test_volume_is_rows_columns_slices(series: Path):
    volume, affine = read_dicom_series(series)
    assert volume.shape == (1, ROWS, COLS, SLICES)
    assert volume.dtype.is_floating_point and volume.element_size() == 4
    assert affine.shape == (4, 4)


def test_affine_maps_voxels_to_dicom_positions_in_ras(series: Path):
    _, affine = read_dicom_series(series)
    corners = [(i, j, k) for i in (0, ROWS - 1) for j in (0, COLS - 1) for k in (0, SLICES - 1)]
    for i, j, k in [*corners, (5, 3, 2), (1, 8, 3)]:
        world = affine @ np.array([i, j, k, 1.0])
        assert np.allclose(world[:3], expected_ras(i, j, k), atol=1e-4), (i, j, k)


def test_affine_survives_nifti_qform_so_viewers_agree(series: Path, tmp_path: Path):
    _, affine = read_dicom_series(series)
    nib.save(nib.Nifti1Image(np.zeros((ROWS, COLS, SLICES), np.uint8), affine), tmp_path / "m.nii")
    saved = nib.load(tmp_path / "m.nii")
    assert np.allclose(saved.get_qform(), affine, atol=1e-4)
    assert np.allclose(saved.get_sform(), affine, atol=1e-4)


def test_intensities_are_rescaled_and_slices_ordered_by_position(series: Path):
    volume, _ = read_dicom_series(series)
    # (row, column, slice) -> stored 200k + 10r + c + 1, times 2, minus 100
    hand = {(0, 0, 0): -98, (3, 7, 2): 776, (11, 0, 0): 122, (0, 9, 4): 1520, (11, 9, 4): 1740}
    for (i, j, k), value in hand.items():
        assert volume[0, i, j, k].item() == value, (i, j, k)
    for k in range(SLICES):
        assert np.array_equal(
            volume[0, :, :, k].numpy(), stored_pixels(k).astype(np.float32) * SLOPE + INTERCEPT
        )


def test_is_dicom_series(series: Path, tmp_path: Path):
    assert is_dicom_series(series)
    (tmp_path / "empty").mkdir()
    assert not is_dicom_series(tmp_path / "empty")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes").write_text("x" * 200)
    assert not is_dicom_series(tmp_path / "text")
    assert not is_dicom_series(next(series.iterdir()))


def test_empty_or_missing_folder_is_refused(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedgraftError, match=re.escape(f"{tmp_path / 'empty'}: no DICOM files")):
        read_dicom_series(tmp_path / "empty")
    with pytest.raises(MedgraftError, match=re.escape(str(tmp_path / "absent"))):
        read_dicom_series(tmp_path / "absent")


def test_non_dicom_file_is_named(series: Path):
    (series / "notes.txt").write_text("not an image " * 20)
    with pytest.raises(MedgraftError, match=re.escape(f"{series / 'notes.txt'}: not a DICOM")):
        read_dicom_series(series)


def test_missing_geometry_tag_names_the_file(series: Path):
    bad = sorted(series.iterdir())[2]
    ds = pydicom.dcmread(bad)
    del ds.ImageOrientationPatient
    ds.save_as(bad)
    with pytest.raises(MedgraftError, match=re.escape(str(bad))) as info:
        read_dicom_series(series)
    assert "ImageOrientationPatient" in str(info.value)


def test_mixed_series_is_refused(series: Path):
    write_series(series, slices=[0], seed=1)  # same geometry, another SeriesInstanceUID
    with pytest.raises(MedgraftError, match=re.escape(f"{series}: mixed DICOM series")):
        read_dicom_series(series)


def test_missing_slice_is_refused(tmp_path: Path):
    write_series(tmp_path / "gap", slices=[0, 1, 3, 4])
    with pytest.raises(MedgraftError, match="not evenly spaced"):
        read_dicom_series(tmp_path / "gap")
