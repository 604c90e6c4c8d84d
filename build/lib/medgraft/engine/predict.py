"""Batch segmentation: a folder of scans in, masks that open on the originals out.

Inputs: NIfTI files (nnU-Net ``_0000`` names included), DICOM series (one sub-folder each),
2D PNG/JPG/TIFF images, or a single file. Every reorientation and resampling done for the model
is inverted, so each mask has the input's exact voxel grid; NIfTI masks keep the input's header
(qform/sform), DICOM masks get the series' geometry. Outputs are written under a temporary name
and renamed; existing outputs are skipped unless ``overwrite``; a failing case is reported and
the batch goes on.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd
from PIL import Image

from medgraft.data.discovery import SUPPORTED_SUFFIXES, case_id_of, is_volume, list_images
from medgraft.data.transforms import (
    Preprocessing,
    SlabwiseSpacing,
    apply_case_transforms,
    geometry_transforms,
    intensity_transforms,
    resamples_in_plane_only,
    spatial_transforms,
)
from medgraft.engine.checkpoint import load_checkpoint
from medgraft.engine.inference import Predictor, inference_defaults
from medgraft.engine.postprocess import (
    keep_largest_component,
    label_sizes,
    overlay_montage,
    remove_small_objects,
)
from medgraft.errors import MedgraftError

SAFE_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass
class PredictOptions:
    batch_size: int = 32
    tta: bool | None = None
    largest_component: bool | None = None
    min_size: int | None = None
    """These three: None takes the model's own default (its recipe's), then medgraft's."""
    save_probabilities: bool = False
    overlays: bool = False
    overwrite: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp_dtype: torch.dtype | None = None

    def with_model_defaults(self, data: dict) -> PredictOptions:
        """Options left unset filled from the checkpoint's ``inference`` settings."""
        defaults = inference_defaults(data.get("inference", {}))
        unset = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **unset)


@dataclass
class CaseResult:
    case_id: str
    input: str
    output: str | None
    status: str
    """``ok``, ``skipped`` (output already there) or ``failed``."""
    seconds: float = 0.0
    slices: int = 0
    message: str = ""
    sizes: list[float] = field(default_factory=list)


@dataclass
class LoadedCase:
    image: torch.Tensor
    """(C, spatial…) on the model's grid, in the encoder's [0, 1] input range."""
    restore: Callable[[torch.Tensor, bool], np.ndarray]
    """Maps a (C, model grid) tensor back onto the input's own grid (``nearest`` for labels)."""
    write_mask: Callable[[np.ndarray, Path], None]
    unit_size: float
    """mL per voxel for volumes, 1 (pixel) for 2D images."""
    affine: np.ndarray | None = None


def input_cases(path: Path) -> list[Path]:
    """A single image file, a DICOM series folder, or every image / series inside a folder."""
    from medgraft.data.dicom import is_dicom_series

    if path.is_file() or (path.is_dir() and is_dicom_series(path)):
        return [path]
    if not path.is_dir():
        raise MedgraftError(f"{path}: input not found")
    cases = list_images(path) + sorted(
        p for p in path.iterdir() if p.is_dir() and is_dicom_series(p)
    )
    if not cases:
        others = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
        found = f"{len(others)} other file(s), e.g. {others[0]}" if others else "folder is empty"
        raise MedgraftError(
            f"{path}: no NIfTI, DICOM series or 2D image files found ({found}; supported: "
            f"{' '.join(SUPPORTED_SUFFIXES)})"
        )
    return cases


def safe_case_id(path: Path) -> str:
    """The case id as a plain file name: no separators, no '..', nothing hidden."""
    raw = path.name if path.is_dir() else case_id_of(path)
    cleaned = "".join(c if c in SAFE_CHARACTERS else "_" for c in raw).lstrip(".")
    return cleaned or "case"


def shard(cases: list[Path], rank: int, world_size: int) -> list[Path]:
    """This rank's deterministic share of the cases (round robin over the sorted list)."""
    return sorted(cases)[rank::world_size]


def check_output_location(inputs: list[Path], output_dir: Path) -> None:
    """Refuse an output folder that is, or lies inside, an input folder: inputs stay untouched."""
    out = output_dir.resolve()
    for folder in {(p if p.is_dir() else p.parent).resolve() for p in inputs}:
        if out == folder or folder in out.parents:
            raise MedgraftError(
                f"{output_dir}: output folder must not be inside the input folder {folder}"
            )


def load_predictor(models: list[Path], options: PredictOptions) -> Predictor:
    """The (ensembled) models; ``options`` left unset follow the first model's defaults."""
    checkpoints = [load_checkpoint(m) for m in models]
    return Predictor.from_checkpoints(
        checkpoints,
        device=options.device,
        batch_size=options.batch_size,
        amp_dtype=options.amp_dtype,
        tta=options.with_model_defaults(checkpoints[0]["data"]).tta,
    )


def predict_cases(
    predictor: Predictor, inputs: list[Path], output_dir: Path, options: PredictOptions
) -> Iterator[CaseResult]:
    """Segment each input into ``output_dir``, yielding one result per case."""
    options = options.with_model_defaults(predictor.data)
    check_output_location(inputs, output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in output_dir.glob(".*.tmp.*"):  # left by a run that was killed mid-write
        stale.unlink()
    volumetric = predictor.data["volumetric"]
    suffix = ".nii.gz" if volumetric else ".png"
    for path in inputs:
        started = time.perf_counter()
        case_id = safe_case_id(path)
        target = output_dir / f"{case_id}{suffix}"
        if target.exists() and not options.overwrite:
            yield CaseResult(case_id, str(path), str(target), "skipped", message="output exists")
            continue
        try:
            result = _predict_one(predictor, path, target, options)
        except MedgraftError as exc:
            result = CaseResult(case_id, str(path), None, "failed", message=str(exc))
        result.seconds = time.perf_counter() - started
        yield result


def _predict_one(
    predictor: Predictor, path: Path, target: Path, options: PredictOptions
) -> CaseResult:
    case = read_case(path, predictor.data)
    segmentation = predictor.segment(case.image, keep_probabilities=options.save_probabilities)
    labels = torch.as_tensor(case.restore(segmentation.labels[None], True)[0])
    if options.largest_component:
        labels = keep_largest_component(labels, predictor.num_classes)
    if options.min_size > 0:
        labels = remove_small_objects(labels, options.min_size, predictor.num_classes)
    mask = labels.numpy().astype(np.uint8)
    case.write_mask(mask, target)
    stem = target.name[: -len("".join(target.suffixes))]
    if segmentation.probabilities is not None:
        probabilities = case.restore(segmentation.probabilities.float(), False)
        _write_probabilities(probabilities, case, target, stem)
    if options.overlays:
        original = case.restore(case.image, False)
        montage = overlay_montage(original, mask)
        _atomic(
            target.with_name(f"{stem}_overlay.png"),
            lambda tmp: Image.fromarray(montage).save(tmp, format="PNG"),
        )
    return CaseResult(
        safe_case_id(path),
        str(path),
        str(target),
        "ok",
        slices=segmentation.slices,
        sizes=label_sizes(mask, predictor.num_classes, case.unit_size),
    )


def read_case(path: Path, data: dict) -> LoadedCase:
    """Load one input the model's way, and keep what is needed to undo every spatial step."""
    from medgraft.data.dicom import is_dicom_series, read_dicom_series

    fields = {f.name for f in dataclasses.fields(Preprocessing)}
    # 2D resizing happens in the predictor, which maps probabilities back itself
    prep = dataclasses.replace(
        Preprocessing.from_dict({k: v for k, v in data.items() if k in fields}), image_size=None
    )
    volumetric = prep.volumetric
    # in-plane resampling runs slab by slab so a CT-sized volume fits in a few GB
    slabwise = SlabwiseSpacing(prep.spacing) if resamples_in_plane_only(prep) else None
    whole_volume = dataclasses.replace(prep, spacing=None) if slabwise else prep
    if path.is_dir() and is_dicom_series(path):
        if not volumetric:
            raise MedgraftError(f"{path}: this model segments 2D images, not DICOM volumes")
        raw, affine = read_dicom_series(path)
        geometry = spatial_transforms(whole_volume)
        loaded = geometry({"image": MetaTensor(raw, affine=torch.as_tensor(affine))})
        header = None
    else:
        if is_volume(path) != volumetric:
            kind = "3D NIfTI volumes" if volumetric else "2D images"
            raise MedgraftError(f"{path}: this model segments {kind}")
        geometry = geometry_transforms(whole_volume, with_label=False)
        loaded = apply_case_transforms(geometry, {"image": str(path)})
        header = nib.load(str(path)) if volumetric else None
        affine = header.affine if header is not None else None
    _check_dimensionality(loaded["image"], volumetric, path)
    if slabwise is not None:
        loaded = {"image": slabwise(loaded["image"])}
    # inverting needs only the geometry trace, not a second full-size copy of the volume
    reference = MetaTensor(
        torch.zeros(1),
        meta=loaded["image"].meta,
        applied_operations=loaded["image"].applied_operations,
    )
    image = _finite(intensity_transforms(prep)(loaded)["image"], path)
    invert_labels = Invertd("pred", geometry, orig_keys="image", nearest_interp=True)
    invert_values = Invertd("pred", geometry, orig_keys="image", nearest_interp=False)

    def restore(values: torch.Tensor, nearest: bool) -> np.ndarray:
        if slabwise is not None:
            values = slabwise.inverse(values, nearest)
        pred = MetaTensor(
            values, meta=reference.meta, applied_operations=reference.applied_operations
        )
        invert = invert_labels if nearest else invert_values
        restored = invert({"image": reference, "pred": pred})["pred"]
        return torch.as_tensor(restored).numpy()

    if not volumetric:
        return LoadedCase(image, restore, _write_png, 1.0)
    nifti_header = header.header if header is not None else None
    return LoadedCase(
        image,
        restore,
        lambda m, t: _write_nifti(m, affine, nifti_header, t),
        _voxel_ml(affine),
        affine,
    )


def _check_dimensionality(image: torch.Tensor, volumetric: bool, path: Path) -> None:
    if volumetric and (image.ndim != 4 or image.shape[0] != 1):
        raise MedgraftError(
            f"{path}: expected a single-channel 3D volume, got shape {tuple(image.shape)}"
        )
    if not volumetric and image.ndim != 3:
        raise MedgraftError(f"{path}: expected a 2D image, got shape {tuple(image.shape[1:])}")


def write_summary(
    results: list[CaseResult], path: Path, label_names: dict[str, str], volumetric: bool
) -> None:
    """One row per case: status, seconds, slices and size of each label (mL, or pixels in 2D)."""
    unit = "ml" if volumetric else "pixels"
    names = [label_names[k] for k in sorted(label_names, key=int) if int(k) > 0]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                [
                    "case_id",
                    "status",
                    "seconds",
                    "slices",
                    *[f"{n}_{unit}" for n in names],
                    "input",
                    "output",
                    "message",
                ]
            )
            for r in results:
                sizes = [f"{s:.4g}" for s in r.sizes] or [""] * len(names)
                writer.writerow(
                    [
                        r.case_id,
                        r.status,
                        f"{r.seconds:.2f}",
                        r.slices,
                        *sizes,
                        r.input,
                        r.output or "",
                        r.message,
                    ]
                )

    _atomic(path, write)


def _finite(image: torch.Tensor, path: Path) -> torch.Tensor:
    tensor = torch.as_tensor(image)
    if not torch.isfinite(tensor).all():
        raise MedgraftError(f"{path}: image contains NaN or infinite values")
    return tensor


def _voxel_ml(affine: np.ndarray) -> float:
    return float(abs(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0


def _write_nifti(mask: np.ndarray, affine: np.ndarray, header, target: Path) -> None:
    """An integer label map with the input's affine and header (qform/sform kept)."""
    if header is not None:
        header = header.copy()
        header.set_data_dtype(np.uint8)
    image = nib.Nifti1Image(mask, affine, header)
    image.header.set_slope_inter(1, 0)
    if header is None:
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
    _atomic(target, lambda tmp: nib.save(image, str(tmp)))


def _write_png(mask: np.ndarray, target: Path) -> None:
    _atomic(target, lambda tmp: Image.fromarray(mask).save(tmp, format="PNG"))


def _write_probabilities(probs: np.ndarray, case: LoadedCase, target: Path, stem: str) -> None:
    """Class probabilities: a float NIfTI (x, y, z, class) for volumes, ``.npz`` for 2D."""
    if case.affine is not None:
        image = nib.Nifti1Image(np.moveaxis(probs, 0, -1).astype(np.float32), case.affine)
        _atomic(target.with_name(f"{stem}_probabilities.nii.gz"), lambda t: nib.save(image, str(t)))
    else:

        def save(tmp: Path) -> None:
            with tmp.open("wb") as handle:
                np.savez_compressed(handle, probabilities=probs.astype(np.float16))

        _atomic(target.with_name(f"{stem}_probabilities.npz"), save)


def _atomic(target: Path, write: Callable[[Path], None]) -> None:
    """Write to a hidden temporary name beside ``target``, then rename: no half-written file."""
    suffix = "".join(target.suffixes)
    tmp = target.with_name(f".{target.name[: -len(suffix)]}.tmp{suffix}")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
