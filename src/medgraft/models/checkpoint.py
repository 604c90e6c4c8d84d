"""medgraft checkpoints: a typed schema, stored as plain tensors and values, written atomically,
loaded safely (``weights_only``), and the one place a model is rebuilt from a checkpoint.

On disk a checkpoint is a dict (format ``medgraft-checkpoint-v1``): ``architecture``, ``data``
(how inputs reach the model, :class:`ModelInputs`), ``model_state``, the run's resolved
``config`` and ``train_config``, the epoch and its scores, and, for ``last.pt``, the training
state ``--resume`` needs. The key names are kept from earlier versions so old runs still load.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medgraft.config.schema import SLICE_VIEWS, InferenceOptions, PredictOptions
from medgraft.data.transforms import Preprocessing
from medgraft.errors import MedgraftError, first_line
from medgraft.files import atomic_write
from medgraft.models.registry import get_encoder
from medgraft.models.unet import Architecture, Segmenter, build_segmenter

CHECKPOINT_FORMAT = "medgraft-checkpoint-v1"
FOLD = re.compile(r"fold_\d+")
"""A cross-validation fold's run folder (``--folds K --fold N``)."""
INPUTS_THAT_MUST_AGREE = ("volumetric", "channels", "image_size")
"""What every model of an ensemble must share to take the same input (2.5D models also
``slices``; 3D models beside 2.5D ones also the grid, see ``Predictor.from_checkpoints``)."""


@dataclass(frozen=True)
class ModelInputs:
    """How scans reach the model (its preprocessing plan) and what its outputs mean."""

    preprocessing: Preprocessing
    slices: int
    """k adjacent slices per 2.5D sample (recorded for 2D models too, whose channels are RGB)."""
    labels: dict[str, str]
    """Label value (as text) → name, background included."""
    modality: str = "unknown"
    mirror_axes: list[int] = field(default_factory=list)
    """In-plane axes the model was trained to be mirrored on: the only ones TTA may flip."""
    inference: InferenceOptions = field(default_factory=InferenceOptions)
    """What ``medgraft predict`` does with this model unless told otherwise."""
    slice_axis: int = 2
    """Spatial array axis a 2.5D model's slices are stacked along (2: axial for RAS volumes);
    models of one ensemble may differ in it."""
    dims: int = 2
    """3: a 3D model, segmenting volumes by sliding windows of ``patch`` voxels."""
    patch: list[int] | None = None

    @property
    def volumetric(self) -> bool:
        return self.preprocessing.volumetric

    @property
    def image_size(self) -> int | None:
        return self.preprocessing.image_size

    @property
    def channels(self) -> tuple[str, ...]:
        """The input channels (modalities) in the order the model takes them."""
        return self.preprocessing.channels

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.preprocessing.to_dict(),
            "slices": self.slices,
            "mirror_axes": list(self.mirror_axes),
            "labels": dict(self.labels),
            "modality": self.modality,
            "inference": dataclasses.asdict(self.inference),
            "slice_axis": self.slice_axis,
            "dims": self.dims,
            "patch": None if self.patch is None else list(self.patch),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelInputs:
        prep_fields = {f.name for f in dataclasses.fields(Preprocessing)}
        return cls(
            preprocessing=Preprocessing.from_dict(
                {k: v for k, v in values.items() if k in prep_fields}
            ),
            slices=values["slices"],
            labels={str(k): v for k, v in values["labels"].items()},
            modality=values.get("modality", "unknown"),
            mirror_axes=list(values.get("mirror_axes", [])),
            inference=InferenceOptions(**values.get("inference", {})),
            slice_axis=int(values.get("slice_axis", 2)),  # runs before it was recorded: axial
            dims=int(values.get("dims", 2)),
            patch=values.get("patch"),
        )


@dataclass
class Checkpoint:
    """A model and the run that made it; ``training_state`` only in checkpoints to resume."""

    architecture: Architecture
    inputs: ModelInputs
    model_state: dict[str, torch.Tensor]
    config: dict[str, Any] = field(default_factory=dict)
    """The run's resolved configuration (as in its ``config.json``)."""
    train_config: dict[str, Any] = field(default_factory=dict)
    """The run's options (``TrainConfig`` as a dict, as in its ``config.yaml``)."""
    epoch: int = 0
    val_dice: float = float("nan")
    best_dice: float = float("nan")
    best_epoch: int = 0
    training_state: dict[str, Any] | None = None
    """Optimizer, scheduler, scaler and RNG states (and deep supervision's heads): ``--resume``."""
    interrupted_in_epoch: int | None = None
    """Set when Ctrl-C stopped the run inside this epoch (its progress is kept)."""

    def to_dict(self) -> dict[str, Any]:
        payload = {
            "format": CHECKPOINT_FORMAT,
            "architecture": self.architecture.to_dict(),
            "data": self.inputs.to_dict(),
            "model_state": self.model_state,
            "config": self.config,
            "train_config": self.train_config,
            "epoch": self.epoch,
            "val_dice": self.val_dice,
            "best_dice": self.best_dice,
            "best_epoch": self.best_epoch,
            **(self.training_state or {}),
        }
        if self.interrupted_in_epoch is not None:
            payload["interrupted_in_epoch"] = self.interrupted_in_epoch
        return payload

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> Checkpoint:
        state = {k: payload[k] for k in TRAINING_STATE_KEYS if k in payload}
        return cls(
            architecture=Architecture.from_dict(payload["architecture"]),
            inputs=ModelInputs.from_dict(payload["data"]),
            model_state=payload["model_state"],
            config=payload.get("config", {}),
            train_config=payload.get("train_config", {}),
            epoch=payload.get("epoch", 0),
            val_dice=payload.get("val_dice", float("nan")),
            best_dice=payload.get("best_dice", float("nan")),
            best_epoch=payload.get("best_epoch", 0),
            training_state=state or None,
            interrupted_in_epoch=payload.get("interrupted_in_epoch"),
        )


TRAINING_STATE_KEYS = ("optimizer", "scheduler", "scaler", "rng", "deep_supervision_heads")
"""What a checkpoint holds for ``--resume`` only, beside the model (deep supervision's heads
train with it but are not part of it)."""


def save_checkpoint(checkpoint: Checkpoint, path: Path) -> None:
    """Write atomically, so a crash never leaves a truncated checkpoint."""
    payload = checkpoint.to_dict()
    atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))


RUN_CHECKPOINTS = {"last": "last.pt", "best": "best.pt"}
"""What ``--checkpoint`` names in a run folder: the final epoch's model, the one every reported
score comes from and so the default (as nnU-Net predicts with its final checkpoint), or the
one with the best validation Dice."""


def checkpoint_in_run(run_dir: Path, checkpoint: str) -> Path:
    """The file ``checkpoint`` names in ``run_dir``: ``last``, ``best``, or a path inside it."""
    return run_dir / RUN_CHECKPOINTS.get(checkpoint, checkpoint)


def resolve_checkpoint_path(model: str | Path, checkpoint: str = PredictOptions.checkpoint) -> Path:
    """A run folder means the checkpoint ``checkpoint`` names in it (its final model unless told
    otherwise); anything else must be a checkpoint file, used as it is."""
    path = Path(model)
    if path.is_dir():
        path = checkpoint_in_run(path, checkpoint)
    if not path.is_file():
        raise MedgraftError(f"{path}: checkpoint not found")
    return path


def ensemble_checkpoints(
    model: str | Path, checkpoint: str = PredictOptions.checkpoint
) -> list[Path]:
    """The models ``--model`` names: a checkpoint file, a run folder's chosen checkpoint
    (``last.pt`` unless told otherwise), or else those of the folder's folds (``fold_N/``) and
    views (``axial/``…, from ``--views``), so a cross-validation or multi-view run is ensembled
    whole."""
    path = Path(model)
    if not path.is_dir() or checkpoint_in_run(path, checkpoint).is_file():
        return [resolve_checkpoint_path(path, checkpoint)]
    folders = [part for part in path.iterdir() if part.is_dir()]
    views = sorted(part for part in folders if part.name in SLICE_VIEWS)
    folds = sorted(
        (part for part in folders if FOLD.fullmatch(part.name)),
        key=lambda part: int(part.name.split("_")[1]),
    )
    if views and folds:  # two trainings left in one --output: which ensemble is unclear
        raise MedgraftError(
            f"{path}: holds both fold_N/ and view folders; name the models to ensemble "
            "(--model FOLDER/VIEW or FOLDER/fold_N)"
        )
    found = [member for part in views + folds for member in ensemble_checkpoints(part, checkpoint)]
    if not found:
        name = RUN_CHECKPOINTS.get(checkpoint, checkpoint)
        raise MedgraftError(
            f"{path}: checkpoint not found (no {name}, nor fold_N/ or view folders holding one)"
        )
    return found


def load_checkpoint(model: str | Path) -> Checkpoint:
    """Load with ``weights_only=True``: a crafted pickle cannot run code here. A run folder
    means its ``last.pt``."""
    path = resolve_checkpoint_path(model)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        raise MedgraftError(f"{path}: cannot load checkpoint ({first_line(exc)})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise MedgraftError(f"{path}: not a medgraft checkpoint")
    try:
        return Checkpoint.from_dict(payload)
    except (AttributeError, KeyError, TypeError, ValueError, MedgraftError) as exc:
        raise MedgraftError(f"{path}: invalid medgraft checkpoint ({first_line(exc)})") from exc


def load_finished_checkpoint(path: Path) -> Checkpoint:
    """A checkpoint to predict with or export: one that Ctrl-C saved mid-epoch is refused, its
    model being part-way through an epoch (``--resume`` alone should read it)."""
    checkpoint = load_checkpoint(path)
    if checkpoint.interrupted_in_epoch is not None:
        raise MedgraftError(
            f"{path}: the run was interrupted during epoch {checkpoint.interrupted_in_epoch}, "
            "so this model is half-trained; finish the run (its train command again with "
            "--resume) or choose --checkpoint best"
        )
    return checkpoint


def load_model(checkpoint: Checkpoint) -> Segmenter:
    """The trained network of ``checkpoint``, on the CPU, in eval mode."""
    arch = checkpoint.architecture
    model = build_segmenter(arch, get_encoder(arch.encoder))
    model.load_state_dict(checkpoint.model_state)
    return model.eval()
