"""Find the cases of a dataset folder, whichever of the common layouts it uses.

Supported layouts (checked in this order):

* MSD: ``dataset.json`` with ``training`` (image/label pairs) and optionally ``test``.
* nnU-Net v2 raw: ``imagesTr/<case>_0000.nii.gz`` (and ``_0001``, … for more channels) and
  ``labelsTr/<case>.nii.gz`` (``dataset.json`` optional; its ``labels`` and
  ``channel_names`` are read when present).
* A plain folder pair: ``images/`` and ``labels/`` (or ``masks/``), matched by file name.

Every layout yields a :class:`CaseRecord` per case; a case with several channels is named by its
first channel file (``CaseRecord.channels`` lists them all; an MSD 4D NIfTI holds them inside).
``DatasetSpec.channels`` names the channels in order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from medgraft.data.io import (
    case_id_of,
    channel_index,
    is_volume,
    list_images,
    list_scans,
    pair_cases,
    split_suffix,
)
from medgraft.data.records import CaseRecord
from medgraft.errors import MedgraftError


@dataclass
class DatasetSpec:
    """What discovery found: labelled cases, unlabelled cases and the label names."""

    root: Path
    layout: str
    training: list[CaseRecord]
    test: list[CaseRecord] = field(default_factory=list)
    labels: dict[int, str] | None = None
    modality: str = "unknown"
    channels: list[str] = field(default_factory=list)
    """The input channels' names (modalities) in order; empty: one unnamed channel."""

    @property
    def is_volumetric(self) -> bool:
        return is_volume(self.training[0].image)


def discover_dataset(
    root: str | Path, labels_dir: str | None = None, roi_dir: str | None = None
) -> DatasetSpec:
    """Describe the dataset in ``root``; raise :class:`MedgraftError` when no layout fits.

    ``labels_dir`` names the label folder of an ``images/`` layout that calls it something
    else (DRIVE's ``1st_manual``); ``roi_dir`` a folder of region-of-interest masks, one per
    case (DRIVE's ``mask``), added to each record as ``roi``. Both are folders inside ``root``
    or paths; their files pair with the images by case name or case key (``io.pair_cases``).
    """
    root = Path(root)
    if not root.is_dir():
        raise MedgraftError(f"{root}: dataset folder not found")
    manifest = _read_manifest(root)
    if labels_dir is not None:
        spec = _discover_folder_pair(root, _folder(root, labels_dir, "--labels-dir"))
    elif manifest is not None and "training" in manifest:
        spec = _discover_msd(root, manifest)
    elif (root / "imagesTr").is_dir() and (root / "labelsTr").is_dir():
        spec = _discover_nnunet(root, manifest)
    else:
        spec = _discover_folder_pair(root)
    if roi_dir is not None:
        _add_regions_of_interest(spec, _folder(root, roi_dir, "--roi-dir"))
    if not spec.training:
        raise MedgraftError(f"{root}: no labelled cases found ({spec.layout} layout)")
    _check_files_exist(spec)
    _check_case_ids(spec)
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


def _channel_names(manifest: dict | None) -> list[str]:
    """The channels' names from MSD ``modality`` or nnU-Net ``channel_names``, in index order."""
    channels = (manifest or {}).get("modality") or (manifest or {}).get("channel_names") or {}
    if not isinstance(channels, dict):
        return []
    try:
        return [str(channels[k]) for k in sorted(channels, key=int)]
    except ValueError:
        return [str(v) for v in channels.values()]


def _modality(manifest: dict | None) -> str:
    """The first channel's modality (``CT`` sets the intensity scheme)."""
    return next(iter(_channel_names(manifest)), "unknown")


def _discover_msd(root: Path, manifest: dict) -> DatasetSpec:
    path = root / "dataset.json"
    for key in ("training", "test"):
        if not isinstance(manifest.get(key, []), list):
            raise MedgraftError(f"{path}: '{key}' must be a list")
    training = []
    for i, entry in enumerate(manifest["training"]):
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise MedgraftError(f"{path}: training entry {i} needs 'image' and 'label'")
        image = _listed_path(root, entry["image"], f"training entry {i}")
        label = _listed_path(root, entry["label"], f"training entry {i}")
        training.append(CaseRecord(case_id_of(image), str(image), str(label)))
    test = []
    for i, entry in enumerate(manifest.get("test", [])):
        listed = entry.get("image") if isinstance(entry, dict) else entry
        image = _listed_path(root, listed, f"test entry {i}")
        test.append(CaseRecord(case_id_of(image), str(image)))
    return DatasetSpec(
        root=root,
        layout="msd",
        training=training,
        test=test,
        labels=parse_labels(manifest, path),
        modality=_modality(manifest),
        channels=_channel_names(manifest),
    )


def _listed_path(root: Path, value: object, where: str) -> Path:
    """A file named in dataset.json, relative to its folder; JSON of another type is an error."""
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise MedgraftError(f"{root / 'dataset.json'}: {where} must name a file, not {value!r:.40}")
    return (root / value).resolve()


def _discover_nnunet(root: Path, manifest: dict | None) -> DatasetSpec:
    labels_dir = root / "labelsTr"
    training, channel_counts = [], {}
    for image in list_scans(root / "imagesTr"):  # one per case: its _0000 file
        suffix = split_suffix(image.name)[1]
        if channel_index(image) != 0:
            hint = (
                "" if manifest is None else f"; for MSD, {root / 'dataset.json'} needs 'training'"
            )
            raise MedgraftError(f"{image}: nnU-Net images must end in _0000{suffix}{hint}")
        case_id = case_id_of(image)
        record = CaseRecord(case_id, str(image), str(labels_dir / f"{case_id}{suffix}"))
        channel_counts[image] = len(record.channels)
        training.append(record)
    channels = _channel_names(manifest) or [
        f"{i:04d}" for i in range(max(channel_counts.values(), default=1))
    ]
    for image, count in channel_counts.items():
        if count != len(channels):
            raise MedgraftError(
                f"{image}: {count} channel file(s) (_0000 …), but the dataset has "
                f"{len(channels)} channel(s): {', '.join(channels)}"
            )
    test = []
    if (root / "imagesTs").is_dir():
        test = [CaseRecord(case_id_of(p), str(p)) for p in list_scans(root / "imagesTs")]
    return DatasetSpec(
        root=root,
        layout="nnunet",
        training=training,
        test=test,
        labels=parse_labels(manifest, root / "dataset.json"),
        modality=_modality(manifest),
        channels=channels if len(channels) > 1 else _channel_names(manifest),
    )


def _folder(root: Path, name: str, flag: str) -> Path:
    folder = Path(name) if Path(name).is_absolute() else root / name
    if not folder.is_dir():
        raise MedgraftError(f"{folder}: {flag} folder not found")
    return folder


def _add_regions_of_interest(spec: DatasetSpec, folder: Path) -> None:
    """Every training record with its ROI mask from ``folder``; a case without one is an error."""
    images = {r.case_id: Path(r.image) for r in spec.training}
    found = pair_cases(images, {case_id_of(p): p for p in list_images(folder)})
    missing = [c for c in images if c not in found]
    if missing:
        raise MedgraftError(f"{folder}: no ROI mask for case {missing[0]} ({len(missing)} in all)")
    spec.training = [replace(r, roi=str(found[r.case_id])) for r in spec.training]


def _discover_folder_pair(root: Path, labels_dir: Path | None = None) -> DatasetSpec:
    images_dir = root / "images"
    if labels_dir is None:
        labels_dir = next((root / n for n in ("labels", "masks") if (root / n).is_dir()), None)
    if not images_dir.is_dir() or labels_dir is None:
        raise MedgraftError(
            f"{root}: no dataset layout recognised; expected dataset.json (MSD), "
            "imagesTr/ + labelsTr/ (nnU-Net), or images/ + labels/ (or masks/)"
        )
    images = {case_id_of(p): p for p in list_images(images_dir)}
    labels = pair_cases(images, {case_id_of(p): p for p in list_images(labels_dir)})
    training = [
        CaseRecord(case_id, str(image), str(labels[case_id]))
        for case_id, image in images.items()
        if case_id in labels
    ]
    unmatched = [image.name for case_id, image in images.items() if case_id not in labels]
    if unmatched:
        raise MedgraftError(
            f"{labels_dir}: no label for {len(unmatched)} image(s), e.g. {unmatched[0]}"
        )
    return DatasetSpec(root=root, layout="folder", training=training)


def _check_files_exist(spec: DatasetSpec) -> None:
    listing = spec.root / "dataset.json" if spec.layout == "msd" else spec.root
    for record in spec.training + spec.test:
        for path in (record.image, record.label):
            if path is not None and not Path(path).is_file():
                raise MedgraftError(f"{path}: listed in {listing} but not found")
    first = is_volume(spec.training[0].image)
    odd = next((r.image for r in spec.training if is_volume(r.image) != first), None)
    if odd is not None:
        raise MedgraftError(
            f"{odd}: {spec.root} mixes 3D NIfTI volumes and 2D images; use one kind"
        )


def _check_case_ids(spec: DatasetSpec) -> None:
    """Refuse a training case listed twice, or two images with one case name (``a.png`` and
    ``a.jpg``): splits and folds go by case name, so one would be dropped or counted twice."""
    seen: dict[str, str] = {}
    for record in spec.training:
        image, other = record.image, seen.get(record.case_id)
        if other is not None:
            problem = "listed twice" if other == image else f"same case name as {other}"
            raise MedgraftError(f"{image}: {problem}")
        seen[record.case_id] = image
