"""The training loop: 2.5D/2D fine-tuning with mixed precision, checkpoints and resume.

:class:`Trainer` runs one fold of one experiment. Variants override one hook each, as in
nnU-Net: :meth:`Trainer.build_loss`, :meth:`~Trainer.build_optimizer`,
:meth:`~Trainer.build_scheduler`, :meth:`~Trainer.train_step`, :meth:`~Trainer.validate`,
:meth:`~Trainer.on_epoch_end`. Runs are resumable (``--resume`` continues from ``last.pt``
exactly as an uninterrupted run would), run under ``torchrun`` as DistributedDataParallel
(rank 0 alone validates and writes), and record everything needed to reproduce them.
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
from medgraft.config.resolve import RESUME_MAY_CHANGE, run_folder
from medgraft.config.schema import TrainConfig
from medgraft.data.augment import Augment2Dd
from medgraft.data.cases import apply_intensity, load_cases
from medgraft.data.discovery import DatasetSpec, discover_dataset
from medgraft.data.planning import plan_preprocessing, with_ct_window
from medgraft.data.sampling import BalancedSampler
from medgraft.data.slicing import SliceStackDataset, slice_axis_index
from medgraft.data.splits import explicit_split, fold_split, split_cases
from medgraft.data.transforms import collate_padded, geometry_transforms
from medgraft.errors import MedgraftError
from medgraft.evaluation.metrics import dice_per_class, hd95_per_class
from medgraft.files import atomic_write_text, sha256_of
from medgraft.inference.predictor import Predictor
from medgraft.models.checkpoint import (
    Checkpoint,
    ModelInputs,
    load_checkpoint,
    load_model,
    resolve_checkpoint_path,
    save_checkpoint,
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
from medgraft.training.deep_supervision import DeepSupervised, deeply_supervised
from medgraft.training.losses import build_loss, ignore_outside
from medgraft.training.optim import build_optimizer, build_scheduler, set_encoder_frozen
from medgraft.training.run_log import EpochResult, RunLog, ValidationScores


@dataclass
class TrainResult:
    run_dir: Path
    best_dice: float
    best_epoch: int
    val_cases: list[dict[str, str]]
    seconds: float


def train(config: TrainConfig) -> TrainResult:
    """Run one training job (one fold) and return where its best model is."""
    return Trainer(config).fit()


class Trainer:
    """One training run; the ``build_*`` hooks and the step/validate/epoch-end methods are the
    places a variant overrides."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.extended_from: int | None = None
        self.rank, self.world_size, self.local_rank = distributed_setup(config.device)
        self.main = self.rank == 0

    # -- hooks -----------------------------------------------------------------------------

    def build_loss(self) -> torch.nn.Module:
        """The loss ``--loss`` names (``training.losses``), over every decoder stage with
        ``--deep-supervision``."""
        loss = build_loss(self.config)
        return deeply_supervised(loss) if self.config.deep_supervision else loss

    def build_optimizer(self) -> torch.optim.Optimizer:
        return build_optimizer(self.trained, self.config)

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
            logits = self.network(images)  # a list, finest first, with deep supervision
            if roi is not None:
                logits = (
                    [ignore_outside(scale, targets, roi) for scale in logits]
                    if isinstance(logits, list)
                    else ignore_outside(logits, targets, roi)
                )
            loss = self.loss_fn(logits, targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.trained.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return float(loss.detach().item())

    def validate(self) -> ValidationScores:
        """Dice and HD95 (mm) per validation case and foreground class."""
        return validate(self.predictor, self.val_cases, self.num_classes)

    def on_epoch_end(self, result: EpochResult) -> None:
        """Log the epoch, save ``last.pt`` (and ``best.pt`` when it improved), report it."""
        improved = not self.val_cases or result.mean_dice > self.best_dice
        if improved:
            self.best_dice, self.best_epoch = result.mean_dice, result.epoch
        checkpoint = self.checkpoint(result.epoch, result.mean_dice)
        # metrics first: a crash between the two repeats the epoch, whose row resume drops
        self.log.epoch(result, self.scheduler.get_last_lr()[-1])
        save_checkpoint(checkpoint, self.run_dir / "last.pt")
        if improved:
            save_checkpoint(checkpoint, self.run_dir / "best.pt")
        console.print(
            f"epoch {result.epoch}: loss {result.loss:.4f}, {self._scores_text(result, improved)}"
            f" {result.seconds:.0f}s"
        )

    def _scores_text(self, result: EpochResult, improved: bool) -> str:
        """The epoch's validation Dice, or that there is none (then every epoch is the best)."""
        if not self.val_cases:
            return "no validation cases (best.pt is the last epoch)"
        dice_text = ", ".join(
            f"{n} {d:.3f}" for n, d in zip(self.class_names, result.dice, strict=True)
        )
        best = " *best*" if improved else ""
        return f"val Dice {result.mean_dice:.3f} ({dice_text}){best}"

    # -- the run ---------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Set everything up, train the remaining epochs, return where the best model is."""
        started = time.perf_counter()
        resume_from = self._setup()
        try:
            self._train_epochs(resume_from)
        finally:
            self.log.close()
        return TrainResult(
            self.run_dir,
            self.best_dice,
            self.best_epoch,
            [c["record"] for c in self.val_cases],
            time.perf_counter() - started,
        )

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
            best_dice=self.best_dice,
            best_epoch=self.best_epoch,
            training_state={
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng_state(),
                **self._training_only_state(),
            },
        )

    def _training_only_state(self) -> dict:
        """Weights that train but are not the saved model (deep supervision's heads)."""
        if isinstance(self.trained, DeepSupervised):
            return {"deep_supervision_heads": self.trained.heads.state_dict()}
        return {}

    def _setup(self) -> Checkpoint | None:
        """Cases, run folder, data, model, loader and optimiser; returns the state to resume."""
        spec = discover_dataset(self.config.data, self.config.labels_dir, self.config.roi_dir)
        if self.config.views and not spec.is_volumetric:
            raise MedgraftError(
                f"{self.config.data}: views {self.config.views!r} (from --views, the recipe or "
                "--config) need volumes; 2D images have one view"
            )
        if self.config.patch_size and spec.is_volumetric:
            raise MedgraftError(
                f"{self.config.data}: --patch-size crops 2D images; volumes train on whole "
                "2.5D slices"
            )
        train_records, val_records = self._select_cases(spec)
        resume_state = self._prepare_run_dir()
        self._record_split(train_records, val_records)
        if resume_state is not None:
            self.config = self._resumed_options(resume_state)
        set_determinism(seed=self.config.seed)
        self.device = select_device(self.config.device, self.local_rank)
        self.dtype = amp_dtype(self.config.amp, self.device)
        self.log = RunLog(self.run_dir, enabled=self.main)
        self._load_data(spec, train_records, val_records)
        self._build_model()
        self.augment = self.config.augment.for_data(self.volumetric)
        self.inputs = ModelInputs(
            preprocessing=self.prep,
            slices=self.config.slices,
            labels={str(k): v for k, v in self.label_names.items()},
            modality=spec.modality,
            # mirroring TTA may only use flips the model was trained with
            mirror_axes=[-2, -1] if self.augment.active and self.augment.flips else [],
            # what `medgraft predict` does with this model unless told otherwise
            inference=self.config.inference,
            slice_axis=slice_axis_index(self.config.slice_axis, self.prep.orientation),
        )
        self.resolved = self._resolved_config(train_records, val_records)
        self.log.write_config(self.config, self.resolved)
        self._build_loader()
        self.optimizer = self.build_optimizer()
        self.scheduler = self.build_scheduler(len(self.loader))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.loss_fn = self.build_loss()
        self.predictor = Predictor(
            self.model,
            self.inputs,
            device=self.device,
            batch_size=self.config.batch_size,
            amp_dtype=self.dtype,
        )
        self.best_dice, self.best_epoch = -math.inf, 0
        return resume_state

    def _select_cases(self, spec: DatasetSpec) -> tuple[list[dict], list[dict]]:
        """Training and validation cases (split file, fold, or seeded split) and the run folder."""
        config, root = self.config, Path(self.config.output)
        self.run_dir = run_folder(config)
        if config.split_file:
            return explicit_split(spec.training, Path(config.split_file))
        if config.folds:
            return fold_split(spec.training, root, config.folds, config.fold, config.seed)
        return split_cases(spec.training, config.val_fraction, config.seed)

    def _prepare_run_dir(self) -> Checkpoint | None:
        """Check the run folder and record the split; with ``resume``, return the state."""
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
        """The saved run's options; the given config may set the epochs (raise them to train
        longer), the hardware and where files are (``RESUME_MAY_CHANGE``)."""
        saved = resolve_options([state.train_config])
        given = {k: getattr(self.config, k) for k in RESUME_MAY_CHANGE}
        config = TrainConfig(**{**saved, **given, "resume": True})
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

    def _record_split(self, train_records: list[dict], val_records: list[dict]) -> None:
        """``splits.json`` of a single run (k-fold runs share their root's)."""
        if not self.main or self.config.folds:
            return
        split = {
            "seed": self.config.seed,
            "val_fraction": None if self.config.split_file else self.config.val_fraction,
            "split_file": self.config.split_file,
            "train": [r["case_id"] for r in train_records],
            "val": [r["case_id"] for r in val_records],
        }
        atomic_write_text(self.run_dir / "splits.json", json.dumps(split, indent=1))

    def _load_data(self, spec: DatasetSpec, train_records: list, val_records: list) -> None:
        """Decode every case once, checked, and scale intensities; decide the label set."""
        self.volumetric = spec.is_volumetric
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
            {int(v) for c in cases for v in torch.unique(c["label"]).tolist()} | {0}
        )
        self.label_names = spec.labels or {v: f"label_{v}" for v in labels}
        self.num_classes = max(labels) + 1
        self.class_names = [
            self.label_names.get(v, f"label_{v}") for v in range(1, self.num_classes)
        ]

    def _build_model(self) -> None:
        """The U-Net on its pretrained (or earlier-run) encoder, on the device."""
        encoder = get_encoder(self.config.encoder)
        # volumes: k slices of each channel (modality); 2D images: RGB, or their named channels
        named = len(self.prep.channels)
        in_channels = max(named, 1) * self.config.slices if self.volumetric else (named or 3)
        self.arch = architecture(encoder, in_channels, self.num_classes)
        model, self.weights_record = initial_model(self.config, encoder, self.arch)
        self.model = model.to(self.device)
        if self.config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # what the optimiser trains: the model, plus training-only heads with deep supervision
        self.trained: torch.nn.Module = self.model
        if self.config.deep_supervision:
            self.trained = DeepSupervised(self.model, self.config.deep_supervision)
            self.trained.to(self.device)
        self.network: torch.nn.Module = self.trained
        if self.world_size > 1:
            self.network = torch.nn.parallel.DistributedDataParallel(
                self.trained,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.config.freeze_encoder_epochs > 0,
            )

    def _resolved_config(self, train_records: list, val_records: list) -> dict:
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
            "train_cases": [r["case_id"] for r in train_records],
            "val_cases": [r["case_id"] for r in val_records],
        }

    def _build_loader(self) -> None:
        """Samples (2.5D stacks or 2D images), augmented, drawn with a foreground share."""
        config = self.config
        masks = ["label", "roi"] if self.config.roi_dir is not None else ["label"]
        steps = [Augment2Dd(["image", *masks], self.augment)]
        if config.patch_size:  # after augmenting, so rotations fill the crop with image
            size = (config.patch_size, config.patch_size)
            steps.append(RandSpatialCropd(["image", *masks], roi_size=size, random_size=False))
        self.sample_transform = Compose(steps)
        if self.volumetric:
            self.dataset = SliceStackDataset(
                self.train_cases, config.slices, self.sample_transform, self.inputs.slice_axis
            )
            foreground = self.dataset.foreground()
        else:
            self.dataset = Dataset(
                [{k: c[k] for k in ("image", *masks)} for c in self.train_cases],
                self.sample_transform,
            )
            foreground = [bool((c["label"] > 0).any()) for c in self.train_cases]
        self.sampler = BalancedSampler(
            foreground,
            config.foreground_ratio,
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

    def _restore(self, state: Checkpoint) -> int:
        """Load model, optimiser, scheduler, scaler and RNG states; returns the next epoch."""
        self.model.load_state_dict(state.model_state)
        training = state.training_state
        if isinstance(self.trained, DeepSupervised):
            self.trained.heads.load_state_dict(training["deep_supervision_heads"])
        self.optimizer.load_state_dict(training["optimizer"])
        self.scheduler.load_state_dict(training["scheduler"])
        self.scaler.load_state_dict(training["scaler"])
        set_rng_state(training["rng"])
        self.best_dice, self.best_epoch = state.best_dice, state.best_epoch
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

    def _train_epochs(self, resume_from: Checkpoint | None) -> None:
        """Every remaining epoch; Ctrl-C mid-epoch keeps that epoch's progress in last.pt."""
        first_epoch = self._restore(resume_from) if resume_from is not None else 1
        self.log.start_metrics(self.class_names, keep_epochs=first_epoch - 1)
        if self.main:
            console.print(
                f"[bold]training[/] {len(self.train_cases)} cases ({len(self.dataset)} "
                f"samples), validating {len(self.val_cases)}; encoder {self.arch.encoder}, "
                f"weights {self.weights_record['encoder']['origin']}, device {self.device}"
                + (f" x {self.world_size} processes" if self.world_size > 1 else "")
            )
        epoch, in_batches = first_epoch - 1, False
        try:
            for epoch in range(first_epoch, self.config.epochs + 1):
                started = time.perf_counter()
                in_batches = True
                result = self._train_one_epoch(epoch)
                in_batches = False
                if self.main:
                    result.scores = self.validate()
                    result.seconds = time.perf_counter() - started  # training and validation
                    self.on_epoch_end(result)
                if self.world_size > 1:
                    dist.barrier()
        except KeyboardInterrupt:
            if self.main and in_batches:
                # keep what this epoch learned; --resume then re-runs the epoch
                state = self.checkpoint(epoch - 1, float("nan"))
                state.interrupted_in_epoch = epoch
                save_checkpoint(state, self.run_dir / "last.pt")
                self.log.event(f"interrupted during epoch {epoch}; saved last.pt")
            if self.main:
                console.print(f"interrupted; continue with --resume ({self.run_dir / 'last.pt'})")
            raise

    def _train_one_epoch(self, epoch: int) -> EpochResult:
        """The batches of one epoch (scores are filled in by validation)."""
        started = time.perf_counter()
        config = self.config
        self.sampler.set_epoch(epoch)
        self.sample_transform.set_random_state(seed=(config.seed * 1_000 + epoch) * 64 + self.rank)
        self.network.train()
        set_encoder_frozen(self.model, epoch <= config.freeze_encoder_epochs)
        self.log.event(f"epoch {epoch} started")
        losses, samples = [], 0
        with progress(enabled=self.main) as bar:
            task = bar.add_task(f"epoch {epoch}/{config.epochs}", total=len(self.loader))
            for batch in self.loader:
                losses.append(self.train_step(batch))
                samples += len(batch["image"])
                speed = samples / (time.perf_counter() - started)
                bar.update(
                    task,
                    advance=1,
                    description=(
                        f"epoch {epoch}/{config.epochs} loss {np.mean(losses):.3f} "
                        f"{speed:.0f} samples/s"
                    ),
                )
        train_seconds = time.perf_counter() - started
        return EpochResult(
            epoch=epoch,
            loss=float(np.mean(losses)),
            samples_per_s=samples * self.world_size / train_seconds,
            seconds=train_seconds,
            num_foreground=self.num_classes - 1,
        )


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
    source = load_checkpoint(config.init_from)
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


def validate(predictor: Predictor, cases: list[dict], num_classes: int) -> ValidationScores:
    """Dice and HD95 (mm) per case and foreground class over whole cases (volumes reassembled)."""
    scores = ValidationScores([], [], [])
    for case in cases:
        pred = predictor.segment(case["image"]).labels
        truth = case["label"][0]
        if "roi" in case:  # scored inside the region of interest only
            inside = case["roi"][0] > 0
            pred, truth = pred * inside, truth * inside
        scores.case_ids.append(case["record"]["case_id"])
        scores.dice.append(dice_per_class(pred, truth, num_classes))
        scores.hd95.append(hd95_per_class(pred, truth, num_classes, case["spacing"][: truth.ndim]))
    return scores
