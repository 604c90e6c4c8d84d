"""Find the cases of a dataset folder, whichever of the common layouts it uses.

Supported layouts (checked in this order):

* MSD: ``dataset.json`` with ``training`` (image/label pairs) and optionally ``test``.
* nnU-Net v2 raw: ``imagesTr/<case>_0000.nii.gz`` and ``labelsTr/<case>.nii.gz``
  (``dataset.json`` optional; its ``labels`` map is read when present).
* A plain folder pair: ``images/`` and ``labels/`` (or ``masks/``), matched by file name.

Every layout yields records ``{"image": str, "label": str, "case_id": str}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from medgraft.errors import MedgraftError

VOLUME_SUFFIXES = (".nii.gz", ".nii")
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SUPPORTED_SUFFIXES = VOLUME_SUFFIXES + IMAGE_2D_SUFFIXES
NNUNET_CHANNEL_SUFFIX = "_0000"


@dataclass
class DatasetSpec:
    """What discovery found: labelled cases, unlabelled cases and the label names."""

    root: Path
    layout: str
    training: list[dict[str, str]]
    test: list[dict[str, str]] = field(default_factory=list)
    labels: dict[int, str] | None = None
    modality: str = "unknown"

    @property
    def is_volumetric(self) -> bool:
        return is_volume(self.training[0]["image"])


def is_volume(path: str | Path) -> bool:
    return str(path).lower().endswith(VOLUME_SUFFIXES)


def split_suffix(name: str) -> tuple[str, str]:
    """Split a file name into (stem, suffix), treating ``.nii.gz`` as one suffix."""
    lower = name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    return Path(name).stem, Path(name).suffix


def case_id_of(path: str | Path) -> str:
    """The case name of an image file: its name without suffix and nnU-Net channel tag."""
    stem, _ = split_suffix(Path(path).name)
    if stem.endswith(NNUNET_CHANNEL_SUFFIX):
        stem = stem[: -len(NNUNET_CHANNEL_SUFFIX)]
    return stem


def list_images(folder: Path) -> list[Path]:
    """Supported image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and p.name.lower().endswith(SUPPORTED_SUFFIXES)
    )


def discover_dataset(root: str | Path) -> DatasetSpec:
    """Describe the dataset in ``root``; raise :class:`MedgraftError` when no layout fits."""
    root = Path(root)
    if not root.is_dir():
        raise MedgraftError(f"{root}: dataset folder not found")
    manifest = _read_manifest(root)
    if manifest is not None and "training" in manifest:
        spec = _discover_msd(root, manifest)
    elif (root / "imagesTr").is_dir() and (root / "labelsTr").is_dir():
        spec = _discover_nnunet(root, manifest)
    else:
        spec = _discover_folder_pair(root)
    if not spec.training:
        raise MedgraftError(f"{root}: no labelled cases found ({spec.layout} layout)")
    _check_files_exist(spec)
    return spec


def _read_manifest(root: Path) -> dict | None:
    path = root / "dataset.json"
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MedgraftError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise MedgraftError(f"{path}: expected a JSON object at the top level")
    return manifest


def parse_labels(manifest: dict | None, path: Path) -> dict[int, str] | None:
    """Read ``labels`` in either MSD ({"1": "name"}) or nnU-Net v2 ({"name": 1}) form."""
    if manifest is None or "labels" not in manifest:
        return None
    raw = manifest["labels"]
    try:
        if all(str(k).isdigit() for k in raw):
            labels = {int(k): str(v) for k, v in raw.items()}
        else:
            labels = {int(v): str(k) for k, v in raw.items()}
    except (TypeError, ValueError, AttributeError) as exc:
        raise MedgraftError(f"{path}: 'labels' must map label values to names") from exc
    if 0 not in labels:
        raise MedgraftError(f"{path}: 'labels' must include 0 (background)")
    return dict(sorted(labels.items()))


def _modality(manifest: dict | None) -> str:
    if manifest is None:
        return "unknown"
    channels = manifest.get("modality") or manifest.get("channel_names") or {}
    return (
        str(next(iter(channels.values()), "unknown")) if isinstance(channels, dict) else "unknown"
    )


def _discover_msd(root: Path, manifest: dict) -> DatasetSpec:
    path = root / "dataset.json"
    training = []
    for i, entry in enumerate(manifest["training"]):
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise MedgraftError(f"{path}: training entry {i} needs 'image' and 'label'")
        image = (root / entry["image"]).resolve()
        label = (root / entry["label"]).resolve()
        training.append({"image": str(image), "label": str(label), "case_id": case_id_of(image)})
    test = []
    for entry in manifest.get("test", []):
        image = (root / (entry["image"] if isinstance(entry, dict) else entry)).resolve()
        test.append({"image": str(image), "case_id": case_id_of(image)})
    return DatasetSpec(
        root=root,
        layout="msd",
        training=training,
        test=test,
        labels=parse_labels(manifest, path),
        modality=_modality(manifest),
    )


def _discover_nnunet(root: Path, manifest: dict | None) -> DatasetSpec:
    labels_dir = root / "labelsTr"
    training = []
    for image in list_images(root / "imagesTr"):
        stem, suffix = split_suffix(image.name)
        if not stem.endswith(NNUNET_CHANNEL_SUFFIX):
            if stem[-5:-4] == "_" and stem[-4:].isdigit():
                raise MedgraftError(
                    f"{image}: only single-channel nnU-Net datasets (_0000) are supported so far"
                )
            raise MedgraftError(f"{image}: nnU-Net images must end in _0000{suffix}")
        case_id = case_id_of(image)
        training.append(
            {
                "image": str(image),
                "label": str(labels_dir / f"{case_id}{suffix}"),
                "case_id": case_id,
            }
        )
    test = []
    if (root / "imagesTs").is_dir():
        test = [{"image": str(p), "case_id": case_id_of(p)} for p in list_images(root / "imagesTs")]
    return DatasetSpec(
        root=root,
        layout="nnunet",
        training=training,
        test=test,
        labels=parse_labels(manifest, root / "dataset.json"),
        modality=_modality(manifest),
    )


def _discover_folder_pair(root: Path) -> DatasetSpec:
    images_dir = root / "images"
    labels_dir = next((root / n for n in ("labels", "masks") if (root / n).is_dir()), None)
    if not images_dir.is_dir() or labels_dir is None:
        raise MedgraftError(
            f"{root}: no dataset layout recognised; expected dataset.json (MSD), "
            "imagesTr/ + labelsTr/ (nnU-Net), or images/ + labels/ (or masks/)"
        )
    labels_by_case = {case_id_of(p): p for p in list_images(labels_dir)}
    training, unmatched = [], []
    for image in list_images(images_dir):
        case_id = case_id_of(image)
        label = labels_by_case.get(case_id)
        if label is None:
            unmatched.append(image.name)
            continue
        training.append({"image": str(image), "label": str(label), "case_id": case_id})
    if unmatched:
        raise MedgraftError(
            f"{labels_dir}: no label for {len(unmatched)} image(s), e.g. {unmatched[0]}"
        )
    return DatasetSpec(root=root, layout="folder", training=training)


def _check_files_exist(spec: DatasetSpec) -> None:
    for record in spec.training + spec.test:
        for key in ("image", "label"):
            if key in record and not Path(record[key]).is_file():
                raise MedgraftError(f"{record[key]}: listed in {spec.root} but not found")
    kinds = {is_volume(r["image"]) for r in spec.training}
    if len(kinds) > 1:
        raise MedgraftError(f"{spec.root}: mixes 3D NIfTI volumes and 2D images; use one kind")
