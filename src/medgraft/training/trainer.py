"""The training loop: 2.5D/2D fine-tuning with mixed precision, checkpoints and resume.

:class:`Trainer` runs one fold of one experiment. Its state is declared in ``__init__`` and
built by public hooks, in this order: :meth:`~Trainer.build_data`, :meth:`~Trainer.build_model`,
:meth:`~Trainer.build_loader`, :meth:`~Trainer.build_optimizer`,
:meth:`~Trainer.build_scheduler`, :meth:`~Trainer.build_loss`; then every epoch runs
:meth:`~Trainer.train_step` per batch, and :meth:`~Trainer.validate` every ``--val-every`` epochs
and after the last. Variants override one hook,
as in nnU-Net, or attach handlers (:mod:`medgraft.training.events`) from :meth:`~Trainer.handlers`;
they are registered by name in :mod:`medgraft.training.trainers` (``--trainer``). Runs are
resumable (``--resume`` continues from ``last.pt`` exactly as an uninterrupted run would), run
under ``torchrun`` as DistributedDataParallel (rank 0 alone validates and writes), and record
everything needed to reproduce them.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, RandSpatialCropd
from monai.utils import set_determinism

from medgraft.config.loading import options_sha256, resolve_options
from medgraft.config.resolve import resumed_options, run_folder
from medgraft.config.schema import AMP_MODES, TRACKERS, AugmentOptions, TrainConfig
from medgraft.data.augment import Augment2Dd
from medgraft.data.cases import LoadedCase, apply_intensity, load_cases
from medgraft.data.discovery import DatasetSpec, discover_dataset
from medgraft.data.patches import check_volume_options, patch_transforms, plan_patch
from medgraft.data.planning import plan_preprocessing, with_ct_window
from medgraft.data.records import CaseRecord
from medgraft.data.sampling import BalancedSampler
from medgraft.data.slicing import SliceStackDataset, slice_axis_index
from medgraft.data.splits import explicit_split, fold_split, split_cases
from medgraft.data.transforms import Preprocessing, collate_padded, geometry_transforms
from medgraft.errors import MedgraftError
from medgraft.evaluation.metrics import METRICS, per_epoch_metrics
from medgraft.files import atomic_write_text, sha256_of
from medgraft.inference.predictor import Predictor
from medgraft.models.checkpoint import (
    Checkpoint,
    ModelInputs,
    load_checkpoint,
    load_finished_checkpoint,
    load_model,
    resolve_checkpoint_path,
)
from medgraft.models.registry import EncoderSpec, get_encoder
from medgraft.models.unet import (
    Architecture,
    Segmenter,
    architecture,
    build_segmenter,
    require_same_input,
    transfer_state,
)
from medgraft.models.volumetric import VOLUME_ENCODER_DEPTH
from medgraft.models.weights import record_download, resolve_weights
from medgraft.runtime import (
    amp_dtype,
    console,
    distributed_setup,
    progress,
    rng_state,
    select_device,
    set_rng_state,
)
from medgraft.training.events import Event, EventEmitter, Handler
from medgraft.training.handlers import CheckpointSaver, DeepSupervision, EpochReporter
from medgraft.training.losses import LOSSES, build_loss
from medgraft.training.optim import build_optimizer, build_scheduler, set_encoder_frozen
from medgraft.training.regions import ignore_outside
from medgraft.training.run_log import EpochResult, MetricsLogger, RunLog, ValidationScores
from medgraft.training.schedules import SCHEDULES
from medgraft.training.tracking import MlflowTracker
from medgraft.training.trainers import TRAINERS
from medgraft.training.validation import score_validation_cases


@dataclass
class TrainResult:
    run_dir: Path
    best_dice: float
    best_epoch: int
    val_cases: list[CaseRecord]
    seconds: float


@dataclass
class FitState:
    """Where the loop is: what handlers read (and ``terminated``, which they may set)."""

    epoch: int = 0
    first_epoch: int = 1
    iteration: int = 0
    """Optimisation steps this process took in this call (not counted across a resume)."""
    loss: float = math.nan
    """The last step's loss."""
    best_dice: float = -math.inf
    best_epoch: int = 0
    improved: bool = False
    """Whether the epoch just validated is the best so far (then ``best.pt`` is written)."""
    in_batches: bool = False
    terminated: bool = False


def run_training(config: TrainConfig) -> TrainResult:
    """Train one run (one fold, one view) with the trainer ``config.trainer`` names."""
    return TRAINERS.get(config.trainer)(config).fit()


def check_choices(config: TrainConfig) -> None:
    """Names a config file or recipe may hold wrongly, refused before any data is read."""
    LOSSES.check(config.loss)
    SCHEDULES.check(config.schedule)
    TRAINERS.check(config.trainer)
    for metric in (config.val_metrics or "").split(","):
        if metric.strip():
            METRICS.check(metric.strip())
    if config.amp not in AMP_MODES:
        raise MedgraftError(f"--amp must be one of {', '.join(AMP_MODES)}, not '{config.amp}'")
    if config.tracker not in TRACKERS:
        raise MedgraftError(
            f"--tracker must be one of {', '.join(TRACKERS)}, not '{config.tracker}'"
        )


class Trainer(EventEmitter):
    """One training run: the ``build_*`` hooks, :meth:`train_step` and :meth:`validate` are the
    places a variant overrides; :meth:`handlers` the place it adds behaviour to events."""

    def __init__(self, config: TrainConfig) -> None:
        super().__init__()
        check_choices(config)
        self.config = config
        self.rank, self.world_size, self.local_rank = distributed_setup(config.device)
        self.main = self.rank == 0
        self.state = FitState()
        # build_data: cases, run folder, preprocessing and labels
        self.run_dir: Path = run_folder(config)
        self.log = RunLog(self.run_dir, enabled=self.main)
        self.resume_state: Checkpoint | None = None
        self.extended_from: int | None = None
        """The epochs a resumed run was planned for, when ``--epochs`` raised them."""
        self.volumetric = False
        self.modality = "unknown"
        self.train_cases: list[LoadedCase] = []
        self.val_cases: list[LoadedCase] = []
        self.prep: Preprocessing | None = None
        self.label_names: dict[int, str] = {}
        self.num_classes = 0
        self.class_names: list[str] = []
        self.val_metrics: list[str] = validation_metrics(config)
        self.device: torch.device | None = None
        self.dtype: torch.dtype | None = None
        self.augment: AugmentOptions = config.augment
        self.patch: tuple[int, int, int] | None = None
        """3D models: the training patch, also the window prediction slides."""
        # build_model: the saved U-Net, what the optimiser trains, what runs forward
        self.arch: Architecture | None = None
        self.weights_record: dict = {}
        self.inputs: ModelInputs | None = None
        self.model: Segmenter | None = None
        self.training_model: torch.nn.Module | None = None
        """The model plus training-only parts (deep supervision's heads): what is optimised."""
        self.parallel_model: torch.nn.Module | None = None
        """``training_model``, wrapped in DistributedDataParallel under torchrun."""
        self.training_state_parts: dict[str, torch.nn.Module] = {}
        """Training-only modules saved for ``--resume`` but not in the model, by name."""
        # build_loader, the optimisation, validation
        self.sample_transform: Compose | None = None
        self.dataset: torch.utils.data.Dataset | None = None
        self.sampler: BalancedSampler | None = None
        self.loader: DataLoader | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self.loss_function: torch.nn.Module | None = None
        self.predictor: Predictor | None = None
        self.resolved: dict = {}
        for handler in self.handlers():
            handler.attach(self)

    # -- hooks -----------------------------------------------------------------------------

    def handlers(self) -> list[Handler]:
        """What attaches to this run's events: the run log, checkpoints, the console line,
        deep supervision and MLflow tracking when asked for (MLflow after the run log, so the
        files it copies are written)."""
        found: list[Handler] = [MetricsLogger(), CheckpointSaver(), EpochReporter()]
        if self.config.deep_supervision:
            found.append(DeepSupervision(self.config.deep_supervision))
        if self.config.tracker == "mlflow":
            found.append(MlflowTracker())
        return found

    def select_cases(self, spec: DatasetSpec) -> tuple[list[CaseRecord], list[CaseRecord]]:
        """Training and validation records: the split file, the fold, or a seeded split."""
        config = self.config
        if config.split_file:
            return explicit_split(spec.training, Path(config.split_file))
        if config.folds:
            root = Path(config.output)
            return fold_split(spec.training, root, config.folds, config.fold, config.seed)
        return split_cases(spec.training, config.val_fraction, config.seed)

    def build_data(self) -> None:
        """The cases, decoded once and checked, the run folder, and the label set."""
        spec = discover_dataset(self.config.data, self.config.labels_dir, self.config.roi_dir)
        self._check_dataset_kind(spec)
        train_records, val_records = self.select_cases(spec)
        self.resume_state = self._prepare_run_dir()
        self._record_split(train_records, val_records)
        if self.resume_state is not None:
            self.config = self._resumed_options(self.resume_state)
        set_determinism(seed=self.config.seed)
        self.device = select_device(self.config.device, self.local_rank)
        self.dtype = amp_dtype(self.config.amp, self.device)
        self._load_cases(spec, train_records, val_records)
        self.augment = self.config.augment.for_data(self.volumetric)
        if self.config.dims == 3:
            shapes = [case.image.shape[1:] for case in self.train_cases]
            stride = 2**VOLUME_ENCODER_DEPTH
            self.patch = plan_patch(self.config.volume_patch, shapes, stride)
        self.resolved = self._resolved_config(train_records, val_records)

    def build_model(self) -> None:
        """The U-Net on its pretrained (or earlier-run) encoder, on the device."""
        encoder = get_encoder(self.config.encoder)
        # volumes: k slices of each channel (modality); 2D images: RGB, or their named channels
        named = len(self.prep.channels)
        in_channels = max(named, 1) * self.config.slices if self.volumetric else (named or 3)
        conversion = None
        if self.config.dims == 3:  # one channel per modality, the volume around it in 3D
            in_channels, conversion = max(named, 1), self.config.conversion
        self.arch = architecture(encoder, in_channels, self.num_classes, conversion)
        model, self.weights_record = initial_model(self.config, encoder, self.arch)
        self.resolved["weights_record"] = self.weights_record
        self.model = model.to(self.device)
        if self.config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.training_model = self.model

    def build_loader(self) -> None:
        """Samples (2.5D stacks or 2D images), augmented, drawn with a foreground share."""
        config = self.config
        masks = ["label", "roi"] if config.roi_dir is not None else ["label"]
        ratio = config.foreground_ratio
        if self.patch is not None:  # 3D patches: the crop itself draws the foreground share
            keys = ["image", *masks]
            self.sample_transform = patch_transforms(keys, self.patch, ratio, self.augment)
            voxels = [case.voxels() for case in self.train_cases]
            self.dataset = Dataset(voxels, self.sample_transform)
            foreground, ratio = [True] * len(self.train_cases), -1.0
        else:
            self._build_slice_dataset(masks)
            foreground = self._foreground()
        self.sampler = BalancedSampler(
            foreground,
            ratio,
            config.seed,
            self.rank,
            self.world_size,
            config.samples_per_epoch,
        )
        self.loader = DataLoader(
            self.dataset,
            batch_size=config.batch_size,
            sampler=self.sampler,
            num_workers=config.num_workers,
            drop_last=len(self.sampler) > config.batch_size,
            # cases of different in-plane sizes meet in one batch: pad to the largest
            collate_fn=partial(collate_padded, divisor=self.model.output_stride),
        )

    def _build_slice_dataset(self, masks: list[str]) -> None:
        """2D images or 2.5D stacks, augmented in-plane, optionally cropped."""
        config = self.config
        steps = [Augment2Dd(["image", *masks], self.augment)]
        if config.patch_size:  # after augmenting, so rotations fill the crop with image
            size = (config.patch_size, config.patch_size)
            steps.append(RandSpatialCropd(["image", *masks], roi_size=size, random_size=False))
        self.sample_transform = Compose(steps)
        if self.volumetric:
            self.dataset = SliceStackDataset(
                self.train_cases, config.slices, self.sample_transform, self.inputs.slice_axis
            )
        else:
            voxels = [case.voxels() for case in self.train_cases]
            self.dataset = Dataset(voxels, self.sample_transform)

    def _foreground(self) -> list[bool]:
        """Whether each 2D sample holds any label, for the sampler's foreground share."""
        if isinstance(self.dataset, SliceStackDataset):
            return self.dataset.foreground()
        return [bool((case.label > 0).any()) for case in self.train_cases]

    def build_loss(self) -> torch.nn.Module:
        """The loss ``--loss`` names (``training.losses``)."""
        return build_loss(self.config)

    def build_optimizer(self) -> torch.optim.Optimizer:
        return build_optimizer(self.training_model, self.config)

    def build_scheduler(self, steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
        return build_scheduler(self.optimizer, self.config, steps_per_epoch)

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        """One optimisation step on one batch; returns the loss."""
        images = batch["image"].to(self.device, non_blocking=True)
        targets = batch["label"].to(self.device, non_blocking=True)
        roi = batch["roi"].to(self.device, non_blocking=True) if "roi" in batch else None
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(
            self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None
        ):
            logits = self.parallel_model(images)  # a list, finest first, with deep supervision
            if roi is not None:
                logits = (
                    [ignore_outside(scale, targets, roi) for scale in logits]
                    if isinstance(logits, list)
                    else ignore_outside(logits, targets, roi)
                )
            loss = self.loss_function(logits, targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.training_model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return float(loss.detach().item())

    def validate(self) -> ValidationScores:
        """The validation metrics (``--val-metrics``) per validation case and class."""
        return score_validation_cases(
            self.predictor, self.val_cases, self.num_classes, self.val_metrics
        )

    def terminate(self) -> None:
        """Stop after the current step (a handler's budget is spent); the epoch is not
        validated or saved, and the run ends as completed."""
        self.state.terminated = True

    # -- the run ---------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Build everything, train the remaining epochs, return where the models are."""
        started = time.perf_counter()
        self.setup()
        try:
            self._train_epochs()
        except BaseException as error:
            self.fire(Event.EXCEPTION_RAISED, error)
            raise
        self.fire(Event.FIT_COMPLETED)
        return TrainResult(
            self.run_dir,
            self.state.best_dice,
            self.state.best_epoch,
            [case.record for case in self.val_cases],
            time.perf_counter() - started,
        )

    def setup(self) -> None:
        """Every ``build_*`` hook in turn, then the state of a resumed run."""
        self.build_data()
        self.build_model()
        self.fire(Event.MODEL_BUILT)
        self.inputs = self._model_inputs()
        self.log.write_config(self.config, self.resolved)
        self.parallel_model = self._parallel(self.training_model)
        self.build_loader()
        self.build_optimisation(len(self.loader))
        self.predictor = Predictor(
            self.model,
            self.inputs,
            device=self.device,
            batch_size=self.config.batch_size,
            amp_dtype=self.dtype,
        )
        if self.resume_state is not None:
            self.state.first_epoch = self._restore(self.resume_state)

    def build_optimisation(self, steps_per_epoch: int) -> None:
        """Optimiser, schedule, gradient scaler and loss of ``training_model``: all that
        :meth:`train_step` needs besides a batch (the benchmarks call it on a bare model)."""
        self.optimizer = self.build_optimizer()
        self.scheduler = self.build_scheduler(steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.loss_function = self.build_loss()

    def checkpoint(self, completed_epoch: int, val_dice: float) -> Checkpoint:
        """Everything ``--resume`` and ``medgraft predict`` need, as plain values."""
        return Checkpoint(
            architecture=self.arch,
            inputs=self.inputs,
            model_state=self.model.state_dict(),
            config=self.resolved,
            train_config=asdict(self.config),
            epoch=completed_epoch,
            val_dice=val_dice,
            best_dice=self.state.best_dice,
            best_epoch=self.state.best_epoch,
            training_state={
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng_state(),
                **{name: part.state_dict() for name, part in self.training_state_parts.items()},
            },
        )

    def _check_dataset_kind(self, spec: DatasetSpec) -> None:
        if self.config.views and not spec.is_volumetric:
            raise MedgraftError(
                f"{self.config.data}: views {self.config.views!r} (from --views, the recipe or "
                "--config) need volumes; 2D images have one view"
            )
        if self.config.dims == 3:
            check_volume_options(self.config, spec)
        if self.config.patch_size and spec.is_volumetric:
            raise MedgraftError(
                f"{self.config.data}: --patch-size crops 2D images; volumes train on whole "
                "2.5D slices"
            )

    def _prepare_run_dir(self) -> Checkpoint | None:
        """Check the run folder; with ``resume``, return the state to continue from."""
        run_dir, config = self.run_dir, self.config
        if run_dir.exists() and not run_dir.is_dir():
            raise MedgraftError(f"{run_dir}: exists and is not a folder")
        last = run_dir / "last.pt"
        if config.resume:
            if not last.exists():
                raise MedgraftError(f"{run_dir}: no last.pt to resume from")
            state = load_checkpoint(last)
            if state.training_state is None:
                raise MedgraftError(f"{last}: holds no optimizer state to resume from")
            return state
        if last.exists() and not config.overwrite:
            raise MedgraftError(
                f"{run_dir}: already holds a training run; pass --resume to continue it, "
                "--overwrite to replace it, or choose another --output"
            )
        if self.main:
            run_dir.mkdir(parents=True, exist_ok=True)
        return None

    def _resumed_options(self, state: Checkpoint) -> TrainConfig:
        """The saved run's options; ``--epochs`` may raise them to train longer."""
        saved = resolve_options([state.train_config])
        config = resumed_options(saved, self.config, new_epochs=True)
        if config.epochs < state.epoch:
            raise MedgraftError(
                f"{self.run_dir}: already trained {state.epoch} epochs; --epochs must be at "
                f"least that to resume (more to train longer)"
            )
        if config.epochs != saved["epochs"]:
            # the schedule is re-planned over the new total: from the resume step on, the
            # learning rate follows the curve a run started with --epochs N would follow
            self.extended_from = saved["epochs"]
        return config

    def _record_split(self, train_records: list[CaseRecord], val_records: list[CaseRecord]) -> None:
        """``splits.json`` of a single run (k-fold runs share their root's)."""
        if not self.main or self.config.folds:
            return
        split = {
            "seed": self.config.seed,
            "val_fraction": None if self.config.split_file else self.config.val_fraction,
            "split_file": self.config.split_file,
            "train": [r.case_id for r in train_records],
            "val": [r.case_id for r in val_records],
        }
        atomic_write_text(self.run_dir / "splits.json", json.dumps(split, indent=1))

    def _load_cases(
        self, spec: DatasetSpec, train_records: list[CaseRecord], val_records: list[CaseRecord]
    ) -> None:
        """Decode every case once, checked, and scale intensities; decide the label set."""
        self.volumetric, self.modality = spec.is_volumetric, spec.modality
        declared = sorted(spec.labels) if spec.labels else None
        # 2D masks without a dataset.json are taken as binary (0/1 or 0/255).
        allowed = declared or (None if self.volumetric else [0, 1])
        prep = plan_preprocessing(spec, train_records, self.config)
        geometry = geometry_transforms(
            prep,
            with_label=True,
            allowed_labels=allowed,
            stray_to_background=self.config.stray_labels_to_background,
            with_roi=self.config.roi_dir is not None,
        )
        self.train_cases = load_cases(train_records, geometry, self.config.cache_dir)
        self.val_cases = load_cases(val_records, geometry, self.config.cache_dir)
        for message in geometry.transforms[-1].log:  # labels mapped to background
            self.log.event(message)
        self.prep = with_ct_window(prep, self.train_cases)
        apply_intensity(self.train_cases + self.val_cases, self.prep)
        cases = self.train_cases + self.val_cases
        labels = declared or sorted(
            {int(v) for c in cases for v in torch.unique(c.label).tolist()} | {0}
        )
        self.label_names = spec.labels or {v: f"label_{v}" for v in labels}
        self.num_classes = max(labels) + 1
        self.class_names = [
            self.label_names.get(v, f"label_{v}") for v in range(1, self.num_classes)
        ]

    def _model_inputs(self) -> ModelInputs:
        """How scans reach the model, saved with it for ``medgraft predict``."""
        return ModelInputs(
            preprocessing=self.prep,
            slices=self.config.slices,
            labels={str(k): v for k, v in self.label_names.items()},
            modality=self.modality,
            # mirroring TTA may only use flips the model was trained with
            mirror_axes=self._mirror_axes(),
            # what `medgraft predict` does with this model unless told otherwise
            inference=self.config.inference,
            slice_axis=slice_axis_index(self.config.slice_axis, self.prep.orientation),
            dims=self.config.dims,
            patch=None if self.patch is None else list(self.patch),
        )

    def _mirror_axes(self) -> list[int]:
        """Axes of a batch mirroring TTA may flip: only those the model was trained with."""
        if not (self.augment.active and self.augment.flips):
            return []
        return [-3, -2, -1] if self.patch is not None else [-2, -1]

    def _parallel(self, module: torch.nn.Module) -> torch.nn.Module:
        if self.world_size == 1:
            return module
        return torch.nn.parallel.DistributedDataParallel(
            module,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=self.config.freeze_encoder_epochs > 0,
        )

    def _resolved_config(
        self, train_records: list[CaseRecord], val_records: list[CaseRecord]
    ) -> dict:
        """``config.json``: the options and everything decided from them and the data."""
        return {
            "train_config": asdict(self.config),
            "options_sha256": options_sha256(self.config),
            "augmentation": asdict(self.augment),
            "num_classes": self.num_classes,
            "weights_record": self.weights_record,
            "preprocessing": self.prep.to_dict(),
            "device_used": str(self.device),
            "amp_dtype": str(self.dtype),
            "world_size": self.world_size,
            "train_cases": [r.case_id for r in train_records],
            "val_cases": [r.case_id for r in val_records],
        }

    def _restore(self, state: Checkpoint) -> int:
        """Load model, optimiser, scheduler, scaler and RNG states; returns the next epoch."""
        self.model.load_state_dict(state.model_state)
        training = state.training_state
        for name, part in self.training_state_parts.items():
            part.load_state_dict(training[name])
        self.optimizer.load_state_dict(training["optimizer"])
        self.scheduler.load_state_dict(training["scheduler"])
        self.scaler.load_state_dict(training["scaler"])
        set_rng_state(training["rng"])
        self.state.best_dice, self.state.best_epoch = state.best_dice, state.best_epoch
        self.log.event(f"resumed from {self.run_dir / 'last.pt'} after epoch {state.epoch}")
        if self.extended_from is not None:
            message = (
                f"run extended from {self.extended_from} to {self.config.epochs} epochs; the "
                f"learning-rate schedule is re-planned over {self.config.epochs} epochs"
            )
            self.log.event(message)
            console.print(message)
        if state.epoch >= self.config.epochs:
            console.print(
                f"{self.run_dir}: all {self.config.epochs} epochs were already trained; nothing "
                "to do (pass a larger --epochs with --resume to train longer)"
            )
        return state.epoch + 1

    def validates(self, epoch: int) -> bool:
        """Whether ``epoch`` is validated: every ``--val-every`` epochs, and always the last."""
        return epoch % self.config.val_every == 0 or epoch == self.config.epochs

    def _train_epochs(self) -> None:
        """Every remaining epoch, validated on the main process at its cadence."""
        self.fire(Event.FIT_STARTED)
        if self.main:
            console.print(
                f"[bold]training[/] {len(self.train_cases)} cases ({len(self.dataset)} "
                f"samples), validating {len(self.val_cases)}; encoder {self.arch.encoder}, "
                f"weights {self.weights_record['encoder']['origin']}, device {self.device}"
                + (f" x {self.world_size} processes" if self.world_size > 1 else "")
            )
        for epoch in range(self.state.first_epoch, self.config.epochs + 1):
            started = time.perf_counter()
            self.state.epoch = epoch
            self.fire(Event.EPOCH_STARTED)
            result = self._train_one_epoch(epoch)
            if self.state.terminated:
                return
            if self.main:
                result.validated = self.validates(epoch)
                if result.validated:
                    result.scores = self.validate()
                result.seconds = time.perf_counter() - started  # training and validation
                self._track_best(result)
                self.fire(Event.EPOCH_COMPLETED, result)
            if self.world_size > 1:
                dist.barrier()

    def _track_best(self, result: EpochResult) -> None:
        """Without validation cases every epoch is the best; else a validated epoch that beat
        the best so far (an epoch between validations never is)."""
        improved = not self.val_cases or (
            result.validated and result.mean_dice > self.state.best_dice
        )
        if improved:
            self.state.best_dice, self.state.best_epoch = result.mean_dice, result.epoch
        self.state.improved = improved

    def _train_one_epoch(self, epoch: int) -> EpochResult:
        """The batches of one epoch (scores are filled in by validation)."""
        started = time.perf_counter()
        config = self.config
        self.sampler.set_epoch(epoch)
        self.sample_transform.set_random_state(seed=(config.seed * 1_000 + epoch) * 64 + self.rank)
        self.parallel_model.train()
        set_encoder_frozen(self.model, epoch <= config.freeze_encoder_epochs)
        self.log.event(f"epoch {epoch} started")
        losses, samples = [], 0
        self.state.in_batches = True
        with progress(enabled=self.main) as bar:
            task = bar.add_task(f"epoch {epoch}/{config.epochs}", total=len(self.loader))
            for batch in self.loader:
                losses.append(self.train_step(batch))
                samples += len(batch["image"])
                self.state.iteration += 1
                self.state.loss = losses[-1]
                self.fire(Event.ITERATION_COMPLETED)
                if self.state.terminated:
                    break
                speed = samples / (time.perf_counter() - started)
                description = f"epoch {epoch}/{config.epochs} loss {np.mean(losses):.3f}"
                bar.update(task, advance=1, description=f"{description} {speed:.0f} samples/s")
        self.state.in_batches = False
        train_seconds = time.perf_counter() - started
        return EpochResult(
            epoch=epoch,
            loss=float(np.mean(losses)),
            samples_per_s=samples * self.world_size / train_seconds,
            seconds=train_seconds,
            num_foreground=self.num_classes - 1,
            scores=ValidationScores(self.val_metrics),
        )


def validation_metrics(config: TrainConfig) -> list[str]:
    """The metrics every epoch computes: ``--val-metrics``, else those declared per-epoch;
    Dice always (it decides ``best.pt``), first."""
    named = [m.strip() for m in (config.val_metrics or "").split(",") if m.strip()]
    chosen = named or per_epoch_metrics()
    return ["dice", *[m for m in chosen if m != "dice"]]


def initial_model(
    config: TrainConfig, encoder: EncoderSpec, arch: Architecture
) -> tuple[Segmenter, dict]:
    """The model from ``--weights``, or from an earlier run with ``--init-from``, and where its
    weights came from (recorded in ``config.json`` and every checkpoint)."""
    if config.init_from is None:
        weights = resolve_weights(
            encoder, config.weights, offline=config.offline, weights_dir=config.weights_dir
        )
        model = build_segmenter(arch, encoder, weights)
        if weights.origin == "download":
            weights = record_download(weights, encoder, model.encoder)
        return model, {"encoder": weights.record(), "decoder": "random"}
    source = load_finished_checkpoint(config.init_from)
    require_same_input(source.architecture, arch)  # before building the source network
    model = build_segmenter(arch, encoder)
    copied = transfer_state(model, load_model(source), config.init_part)
    path = resolve_checkpoint_path(config.init_from)
    record = {
        "origin": "init-from",
        "path": str(path.resolve()),
        "sha256": sha256_of(path),
        "parts": copied,
        "source_run_weights": source.config.get("weights_record"),
    }
    return model, {"encoder": record, "decoder": record if "decoder" in copied else "random"}
