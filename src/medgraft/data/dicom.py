"""Reading a folder of DICOM slices as one volume with a NIfTI (RAS) affine.

Read with pydicom directly rather than MONAI's ``PydicomReader``: that reader orders slices by
``InstanceNumber`` (not by position, so a series numbered against its geometry comes out
flipped), and on missing geometry tags, mixed shapes or spacings it only warns and falls back to
an identity affine. A mask written on such a volume would silently not overlay the scan; here
each of those cases is an error naming the folder or file.

Axis order: ``volume[0, i, j, k]`` is row ``i`` and column ``j`` of the ``k``-th slice, slices
sorted by position along the normal ``cross(row_dir, col_dir)`` (ascending). The affine follows
the DICOM formula (PS3.3 C.7.6.2.1.1) in LPS, then flips x and y to RAS as NIfTI expects::

    lps(i, j, k) = IPP_0 + i * PixelSpacing[0] * col_dir + j * PixelSpacing[1] * row_dir
                   + k * (IPP_last - IPP_0) / (D - 1)

where ``row_dir``/``col_dir`` are the first/last three values of ImageOrientationPatient.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import torch

from medgraft.errors import MedgraftError, first_line

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
REQUIRED_TAGS = (
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "PixelData",
)
ORIENTATION_TOL = 1e-3  # direction cosines are stored with ~6 decimals
POSITION_TOL_MM = 0.05  # positions are rounded in the tags; far below any voxel size


@dataclass
class _Slice:
    path: Path
    series: str | None
    position: np.ndarray  # ImagePositionPatient (LPS, mm)
    orientation: np.ndarray  # ImageOrientationPatient: row direction, then column direction
    spacing: np.ndarray  # PixelSpacing: between rows, between columns (mm)
    thickness: float
    pixels: np.ndarray  # rescaled to real-world values, float32


def is_dicom_series(path: Path) -> bool:
    """True for a folder holding DICOM files (scanners export series as extension-less files)."""
    path = Path(path)
    return path.is_dir() and any(_has_dicom_magic(p) for p in _files_in(path))


def read_dicom_series(folder: Path) -> tuple[torch.Tensor, np.ndarray]:
    """Volume ``(1, rows, columns, slices)`` as float32 and its 4x4 RAS affine (module docstring).

    RescaleSlope/RescaleIntercept are applied per slice (e.g. CT in Hounsfield units). Raises
    :class:`MedgraftError` naming the folder or file for anything that would misplace the volume.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MedgraftError(f"{folder}: DICOM folder not found")
    files = _files_in(folder)
    if not files:
        raise MedgraftError(f"{folder}: no DICOM files found")
    slices = [_read_slice(p) for p in files]
    _check_single_series(folder, slices)

    row_dir, col_dir = slices[0].orientation[:3], slices[0].orientation[3:]
    normal = np.cross(row_dir, col_dir)
    slices.sort(key=lambda s: _along(normal, s.position))
    affine = np.eye(4)
    affine[:3, 0] = col_dir * slices[0].spacing[0]
    affine[:3, 1] = row_dir * slices[0].spacing[1]
    affine[:3, 2] = _slice_step(folder, slices, normal)
    affine[:3, 3] = slices[0].position
    volume = np.stack([s.pixels for s in slices], axis=-1)[None]
    return torch.from_numpy(volume), LPS_TO_RAS @ affine


def _along(normal: np.ndarray, position: np.ndarray) -> float:
    """A slice's place in the volume: its position along the slice normal."""
    return float(normal @ position)


def series_datasets(folder: Path) -> list[pydicom.Dataset]:
    """The series' slices as pydicom datasets, in the volume's slice order (``volume[..., k]``
    is ``series_datasets(folder)[k]``): what a DICOM-SEG must reference, frame by frame."""
    datasets = [pydicom.dcmread(p) for p in _files_in(Path(folder))]
    orientation = np.asarray(datasets[0].ImageOrientationPatient, dtype=np.float64)
    normal = np.cross(orientation[:3], orientation[3:])
    return sorted(
        datasets,
        key=lambda d: _along(normal, np.asarray(d.ImagePositionPatient, dtype=np.float64)),
    )


def _files_in(folder: Path) -> list[Path]:
    """Every non-hidden file directly inside ``folder`` (hidden ones are OS clutter)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _has_dicom_magic(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _read_slice(path: Path) -> _Slice:
    if not _has_dicom_magic(path):
        raise MedgraftError(f"{path}: not a DICOM file (no 'DICM' marker at byte 128)")
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises many types for corrupt files
        raise MedgraftError(f"{path}: cannot read DICOM ({first_line(exc)})") from exc
    missing = [tag for tag in REQUIRED_TAGS if tag not in ds]
    if missing:
        raise MedgraftError(f"{path}: DICOM tags missing: {', '.join(missing)}")
    try:
        position = np.asarray(ds.ImagePositionPatient, dtype=np.float64)
        orientation = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
        spacing = np.asarray(ds.PixelSpacing, dtype=np.float64)
        slope = float(ds.get("RescaleSlope", 1.0))
        intercept = float(ds.get("RescaleIntercept", 0.0))
        thickness = float(ds.get("SliceThickness") or 1.0)
        stored = ds.pixel_array
    except Exception as exc:  # bad values, unsupported compression, truncated pixel data
        raise MedgraftError(f"{path}: cannot decode DICOM ({first_line(exc)})") from exc
    if stored.ndim != 2:
        raise MedgraftError(f"{path}: multi-frame or colour DICOM is not supported")
    if position.shape != (3,) or orientation.shape != (6,) or spacing.shape != (2,):
        raise MedgraftError(f"{path}: malformed ImagePosition/ImageOrientation/PixelSpacing")
    row_dir, col_dir = orientation[:3], orientation[3:]
    unit = np.allclose([row_dir @ row_dir, col_dir @ col_dir], 1.0, atol=ORIENTATION_TOL)
    if not (unit and abs(row_dir @ col_dir) < ORIENTATION_TOL and np.all(spacing > 0)):
        raise MedgraftError(f"{path}: invalid ImageOrientationPatient or PixelSpacing")
    return _Slice(
        path=path,
        series=ds.get("SeriesInstanceUID"),
        position=position,
        orientation=orientation,
        spacing=spacing,
        thickness=thickness,
        pixels=(stored.astype(np.float64) * slope + intercept).astype(np.float32),
    )


def _check_single_series(folder: Path, slices: list[_Slice]) -> None:
    """Refuse folders mixing series: stacking them would interleave unrelated images."""
    first = slices[0]
    for other in slices[1:]:
        if other.series != first.series:
            differs = "SeriesInstanceUID"
        elif other.pixels.shape != first.pixels.shape:
            differs = "Rows/Columns"
        elif not np.allclose(other.orientation, first.orientation, atol=ORIENTATION_TOL):
            differs = "ImageOrientationPatient"
        elif not np.allclose(other.spacing, first.spacing, rtol=1e-4):
            differs = "PixelSpacing"
        else:
            continue
        raise MedgraftError(
            f"{folder}: mixed DICOM series ({first.path.name} and {other.path.name} differ in "
            f"{differs}); put one series per folder"
        )


def _slice_step(folder: Path, slices: list[_Slice], normal: np.ndarray) -> np.ndarray:
    """Offset between consecutive slices (LPS, mm); an affine needs them evenly spaced.

    A slice's offset along the normal is its true spacing (SliceThickness may differ from it
    when slices overlap or have gaps), so it is only used when there is a single slice.
    """
    if len(slices) == 1:
        return normal * slices[0].thickness
    positions = np.stack([s.position for s in slices])
    step = (positions[-1] - positions[0]) / (len(slices) - 1)
    distances = np.diff(positions @ normal)
    if distances.min() < POSITION_TOL_MM:
        raise MedgraftError(
            f"{folder}: several DICOM slices at the same position (more than one series, echo or "
            "time point in one folder?)"
        )
    on_grid = positions[0] + np.arange(len(slices))[:, None] * step
    if not np.allclose(positions, on_grid, atol=POSITION_TOL_MM):
        raise MedgraftError(
            f"{folder}: DICOM slices are not evenly spaced (gaps {distances.min():.3g} to "
            f"{distances.max():.3g} mm; missing slices?)"
        )
    if not np.allclose(step, normal * (step @ normal), atol=POSITION_TOL_MM):
        raise MedgraftError(f"{folder}: tilted DICOM stacks (gantry tilt) are not supported")
    return step
