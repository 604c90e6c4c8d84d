"""Segment a list of image files and write masks that open on the original in any viewer."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from PIL import Image

from medgraft.data.discovery import case_id_of, is_volume, list_images
from medgraft.data.transforms import apply_case_transforms, case_transforms
from medgraft.engine.checkpoint import load_checkpoint
from medgraft.engine.inference import Predictor
from medgraft.errors import MedgraftError


@dataclass
class CaseResult:
    case_id: str
    input: str
    output: str | None
    status: str
    seconds: float
    message: str = ""


def input_files(path: Path) -> list[Path]:
    """A single image file, or every supported image directly inside a folder."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise MedgraftError(f"{path}: input not found")
    files = list_images(path)
    if not files:
        raise MedgraftError(f"{path}: no NIfTI or 2D image files found")
    return files


def check_output_location(inputs: list[Path], output_dir: Path) -> None:
    """Refuse an output folder that is, or lies inside, an input folder: inputs stay untouched."""
    out = output_dir.resolve()
    for folder in {p.resolve().parent for p in inputs}:
        if out == folder or folder in out.parents:
            raise MedgraftError(
                f"{output_dir}: output folder must not be inside the input folder {folder}"
            )


def predict_files(
    model: str | Path,
    inputs: list[Path],
    output_dir: Path,
    *,
    device: torch.device,
    batch_size: int = 32,
    amp_dtype: torch.dtype | None = None,
) -> Iterator[CaseResult]:
    """Segment each file of ``inputs`` into ``output_dir``, yielding one result per case.

    A case that fails is reported in its result and the batch goes on.
    """
    check_output_location(inputs, output_dir)
    checkpoint = load_checkpoint(model)
    predictor = Predictor.from_checkpoint(
        checkpoint, device=device, batch_size=batch_size, amp_dtype=amp_dtype
    )
    volumetric = checkpoint["data"]["volumetric"]
    transform = case_transforms(volumetric=volumetric, labels=None)
    output_dir.mkdir(parents=True, exist_ok=True)
    for path in inputs:
        started = time.perf_counter()
        case_id = case_id_of(path)
        try:
            if is_volume(path) != volumetric:
                kind = "3D NIfTI volumes" if volumetric else "2D images"
                raise MedgraftError(f"{path}: this model segments {kind}")
            image = _load(transform, path)
            mask = predictor.probabilities(image).argmax(0).numpy().astype(np.uint8)
            target = output_dir / (case_id + (".nii.gz" if volumetric else ".png"))
            (_write_nifti if volumetric else _write_png)(mask, path, target)
            yield CaseResult(case_id, str(path), str(target), "ok", time.perf_counter() - started)
        except MedgraftError as exc:
            yield CaseResult(
                case_id, str(path), None, "failed", time.perf_counter() - started, str(exc)
            )


def _load(transform, path: Path) -> torch.Tensor:
    image = apply_case_transforms(transform, {"image": str(path)})["image"]
    if not torch.isfinite(image.as_tensor()).all():
        raise MedgraftError(f"{path}: image contains NaN or infinite values")
    return image.as_tensor()


def _write_nifti(mask: np.ndarray, source: Path, target: Path) -> None:
    """Write with the input's affine and header (qform/sform kept), as an integer label map."""
    reference = nib.load(str(source))
    if mask.shape != reference.shape[:3]:
        raise MedgraftError(f"{source}: mask shape {mask.shape} != image shape {reference.shape}")
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    image = nib.Nifti1Image(mask, reference.affine, header)
    image.header.set_slope_inter(1, 0)
    _atomic(target, lambda tmp: nib.save(image, str(tmp)))


def _write_png(mask: np.ndarray, source: Path, target: Path) -> None:
    _atomic(target, lambda tmp: Image.fromarray(mask).save(tmp, format="PNG"))


def _atomic(target: Path, write) -> None:
    """Write to a hidden temporary name beside ``target``, then rename: no half-written mask."""
    suffix = "".join(target.suffixes)
    tmp = target.with_name(f".{target.name[: -len(suffix)]}.tmp{suffix}")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
