"""The training loop: 2.5D/2D fine-tuning with DiceCE, AdamW, mixed precision, checkpoints.

One function, :func:`train`, runs one fold of one experiment. It is resumable (``--resume``
continues from ``last.pt`` exactly as an uninterrupted run would), runs under
``torchrun`` as DistributedDataParallel (rank 0 alone writes), and records everything needed
to reproduce it in the run folder.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.distributed as dist
from monai.data import DataLoader, Dataset, PersistentDataset
from monai.losses import DiceCELoss
from monai.transforms import Compose, Lambda
from monai.utils import convert_to_tensor, set_determinism
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from medgraft.data.augment import Augment2Dd, augmentation_from_dict
from medgraft.data.discovery import DatasetSpec, discover_dataset
from medgraft.data.io import check_readable
from medgraft.data.slicing import BalancedSampler, SliceStackDataset
from medgraft.data.transforms import (
    Preprocessing,
    apply_case_transforms,
    collate_padded,
    geometry_transforms,
    intensity_transforms,
)
from medgraft.engine.checkpoint import load_checkpoint, resolve_checkpoint_path, save_checkpoint
from medgraft.engine.inference import Predictor, inference_defaults
from medgraft.engine.metrics import dice_per_class, hd95_per_class
from medgraft.engine.run_log import RunLog
from medgraft.errors import MedgraftError, first_line, root_cause
from medgraft.models.registry import DEFAULT_ENCODER, get_encoder
from medgraft.models.unet import architecture, build_segmenter, transfer_state
from medgraft.models.weights import record_download, resolve_weights, sha256_of

console = Console(stderr=True, soft_wrap=True, highlight=False)

CT_WINDOW_PERCENTILES = (0.5, 99.5)


@dataclass
class TrainConfig:
    """Every option of a training run; saved as ``config.yaml`` and inside each checkpoint."""

    data: str
    output: str
    encoder: str = DEFAULT_ENCODER
    weights: str = "imagenet"
    offline: bool = False
    epochs: int = 8
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = "poly"
    warmup_epochs: int = 0
    grad_clip: float = 12.0
    val_fraction: float = 0.2
    split_file: str | None = None
    folds: int = 0
    fold: int = 0
    seed: int = 0
    slices: int = 3
    image_size: int = 256
    orientation: str = "RAS"
    spacing: str = "auto"
    foreground_ratio: float = 0.5
    samples_per_epoch: int = 0
    augment: dict = field(default_factory=dict)
    lambda_dice: float = 1.0
    lambda_ce: float = 1.0
    inference: dict = field(default_factory=dict)
    recipe: str | None = None
    stray_labels_to_background: bool = False
    cache_dir: str | None = None
    amp: str = "auto"
    channels_last: bool = False
    device: str = "auto"
    num_workers: int = 0
    overwrite: bool = False
    resume: bool = False
    weights_dir: str | None = None
    freeze_encoder_epochs: int = 0
    encoder_lr_mult: float = 1.0
    init_from: str | None = None
    init_part: str = "encoder"


@dataclass
class TrainResult:
    run_dir: Path
    best_dice: float
    best_epoch: int
    val_cases: list[dict[str, str]]
    seconds: float


def select_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise MedgraftError("--device cuda was requested but no CUDA GPU is available")
    return torch.device(f"cuda:{local_rank}" if name == "cuda" else name)


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """``auto``: fp16 on CUDA, full precision on the CPU (bf16 there is slow without AMX)."""
    choices = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}
    if mode == "auto":
        return torch.float16 if device.type == "cuda" else None
    if mode not in choices:
        raise MedgraftError(f"--amp must be auto, fp16, bf16 or off, not '{mode}'")
    if mode == "fp16" and device.type != "cuda":
        raise MedgraftError("--amp fp16 needs a CUDA device; use bf16 or off on the CPU")
    return choices[mode]


def split_cases(records: list[dict], val_fraction: float, seed: int) -> tuple[list, list]:
    """Seeded, reproducible train/validation split by case."""
    if not 0.0 <= val_fraction < 1.0:
        raise MedgraftError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    order = sorted(records, key=lambda r: r["case_id"])
    random.Random(seed).shuffle(order)
    n_val = max(1, round(val_fraction * len(order))) if val_fraction > 0 else 0
    if len(order) - n_val < 1:
        raise MedgraftError(f"{len(order)} labelled case(s) leave none for training")
    val, train = order[:n_val], order[n_val:]
    return sorted(train, key=lambda r: r["case_id"]), sorted(val, key=lambda r: r["case_id"])


def explicit_split(records: list[dict], path: Path) -> tuple[list, list]:
    """The cases named in a JSON file ``{"train": [ids], "val": [ids]}`` (nnU-Net style)."""
    try:
        split = json.loads(path.read_text())
        wanted = {part: [str(c) for c in split[part]] for part in ("train", "val")}
    except FileNotFoundError:
        raise MedgraftError(f"split file not found: {path}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MedgraftError(
            f'{path}: expected JSON {{"train": [case ids], "val": [case ids]}} ({first_line(exc)})'
        ) from None
    by_id = {r["case_id"]: r for r in records}
    unknown = sorted(c for part in wanted.values() for c in part if c not in by_id)
    if unknown:
        raise MedgraftError(f"{path}: cases not in the dataset: {', '.join(unknown[:5])}")
    if not wanted["train"]:
        raise MedgraftError(f"{path}: names no training case")
    if set(wanted["train"]) & set(wanted["val"]):
        raise MedgraftError(f"{path}: a case is in both train and val")
    return [by_id[c] for c in wanted["train"]], [by_id[c] for c in wanted["val"]]


def make_folds(case_ids: list[str], folds: int, seed: int) -> list[dict[str, list[str]]]:
    """K folds over the sorted case ids, shuffled with ``seed``; each case validates once."""
    if folds < 2 or folds > len(case_ids):
        raise MedgraftError(f"--folds must be between 2 and the number of cases ({len(case_ids)})")
    order = sorted(case_ids)
    random.Random(seed).shuffle(order)
    parts = [sorted(order[i::folds]) for i in range(folds)]
    return [
        {"train": sorted(c for j, p in enumerate(parts) if j != i for c in p), "val": parts[i]}
        for i in range(folds)
    ]


def fold_split(
    records: list[dict], root: Path, folds: int, fold: int, seed: int
) -> tuple[list, list]:
    """The ``fold``-th split, from ``root/splits.json`` (written on first use, then reused)."""
    if not 0 <= fold < folds:
        raise MedgraftError(f"--fold must be in [0, {folds - 1}], got {fold}")
    ids = sorted(r["case_id"] for r in records)
    path = root / "splits.json"
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("folds_count") != folds or sorted(stored["cases"]) != ids:
            raise MedgraftError(f"{path}: holds a split of other cases or fold count")
        splits = stored["folds"]
    else:
        splits = make_folds(ids, folds, seed)
        if _is_main_process():
            root.mkdir(parents=True, exist_ok=True)
            path.write_text(
                json.dumps(
                    {"seed": seed, "folds_count": folds, "cases": ids, "folds": splits}, indent=1
                )
            )
    by_id = {r["case_id"]: r for r in records}
    return [by_id[c] for c in splits[fold]["train"]], [by_id[c] for c in splits[fold]["val"]]


def target_spacing(spec: DatasetSpec, records: list[dict], setting: str, orientation: str):
    """``auto``: the training cases' median in-plane spacing (after reorientation); through-plane
    spacing is kept (0). ``none`` keeps every case's own grid; ``x,y[,z]`` sets it."""
    if not spec.is_volumetric or setting == "none":
        return None
    if setting != "auto":
        try:
            values = [float(v) for v in setting.split(",")]
        except ValueError as exc:
            raise MedgraftError(
                f"--spacing must be auto, none or x,y[,z], not '{setting}'"
            ) from exc
        return tuple(values + [0.0] * (3 - len(values)))
    zooms = []
    for record in records:
        try:
            header_image = nib.load(record["image"])
            case_zooms = header_image.header.get_zooms()
        except Exception as exc:  # nibabel raises many types for bad files
            check_readable(record["image"])
            raise MedgraftError(
                f"{record['image']}: cannot read header ({first_line(exc)})"
            ) from exc
        if len(header_image.shape) != 3:
            continue  # not a volume: loading the case reports it with the full story
        ornt = nib.orientations.io_orientation(header_image.affine)
        target = nib.orientations.axcodes2ornt(orientation)
        ras = np.zeros(3)
        for axis, (out_axis, _) in enumerate(ornt[:3]):
            ras[int(np.flatnonzero(target[:, 0] == out_axis)[0])] = case_zooms[axis]
        zooms.append(ras)
    if not zooms:
        return None
    median = np.median(np.array(zooms), axis=0)
    return (round(float(median[0]), 4), round(float(median[1]), 4), 0.0)


def load_cases(
    records: list[dict],
    geometry: Compose,
    volumetric: bool,
    cache_dir: str | None = None,
) -> list[dict]:
    """Load every case once, up front: a bad file stops training before it starts.

    With ``cache_dir`` the loaded geometry is also kept on disk (MONAI ``PersistentDataset``),
    so later runs on the same data skip decoding.
    """
    # keep the voxel spacing as a plain value: the disk cache stores tensors without metadata
    geometry = Compose([*geometry.transforms, Lambda(_with_spacing)])
    persistent = PersistentDataset(records, geometry, cache_dir=cache_dir) if cache_dir else None
    cases = []
    with _progress() as progress:
        for index, record in enumerate(progress.track(records, description="loading cases")):
            if persistent is None:
                loaded = apply_case_transforms(geometry, record)
            else:
                try:
                    loaded = persistent[index]
                except Exception as exc:  # MONAI wraps the reader's error
                    cause = root_cause(exc)
                    if isinstance(cause, MedgraftError):
                        raise cause from None
                    raise MedgraftError(
                        f"{record['image']}: cannot load ({first_line(cause)})"
                    ) from exc
            _check_pair(loaded, record)
            cases.append(
                {
                    # plain tensors: MONAI metadata on every slice and through the network
                    # costs more per sample than augmenting it (measured in bench_train.py)
                    "image": convert_to_tensor(loaded["image"], track_meta=False),
                    "label": convert_to_tensor(loaded["label"], track_meta=False),
                    "spacing": [float(v) for v in loaded["spacing"]],
                    "case_id": record["case_id"],
                    "record": record,
                }
            )
    return cases


def _with_spacing(data: dict) -> dict:
    image = data["image"]
    spacing = image.pixdim if image.ndim == 4 else torch.ones(image.ndim - 1)
    return {**data, "spacing": torch.as_tensor(spacing, dtype=torch.float64)}


def _check_pair(loaded: dict, record: dict) -> None:
    """What the loading transforms leave to check: finite image values.

    Dimensions (2D/3D/4D) and the label's shape and affine are checked while loading
    (``CheckGeometryd``, ``SameGridd``), on the files as stored and with their metadata,
    which the disk cache drops.
    """
    if not torch.isfinite(torch.as_tensor(loaded["image"])).all():
        raise MedgraftError(f"{record['image']}: image contains NaN or infinite values")


def ct_window(cases: list[dict]) -> tuple[float, float]:
    """nnU-Net's CT normalisation: 0.5-99.5th percentiles of foreground intensities."""
    generator = torch.Generator().manual_seed(0)
    samples = []
    for case in cases:
        values = case["image"][0][case["label"][0] > 0]
        if values.numel() > 100_000:
            values = values[torch.randperm(values.numel(), generator=generator)[:100_000]]
        samples.append(values)
    values = torch.cat(samples) if samples else torch.empty(0)
    if values.numel() == 0:
        raise MedgraftError("no foreground voxels in the training cases to set the CT window")
    low, high = np.percentile(values.numpy(), CT_WINDOW_PERCENTILES)
    return float(low), float(high)


def train(config: TrainConfig) -> TrainResult:
    """Run one training job (one fold) and return where its best model is."""
    started = time.perf_counter()
    rank, world_size, local_rank = _distributed_setup(config.device)
    main = rank == 0
    spec = discover_dataset(config.data)
    root = Path(config.output)
    if config.split_file:
        train_records, val_records = explicit_split(spec.training, Path(config.split_file))
        run_dir = root
    elif config.folds:
        train_records, val_records = fold_split(
            spec.training, root, config.folds, config.fold, config.seed
        )
        run_dir = root / f"fold_{config.fold}"
    else:
        train_records, val_records = split_cases(spec.training, config.val_fraction, config.seed)
        run_dir = root
    resume_state = _prepare_run_dir(run_dir, config, main)
    if main and not config.folds:
        split = {
            "seed": config.seed,
            "val_fraction": None if config.split_file else config.val_fraction,
            "split_file": config.split_file,
            "train": [r["case_id"] for r in train_records],
            "val": [r["case_id"] for r in val_records],
        }
        (run_dir / "splits.json").write_text(json.dumps(split, indent=1))
    if resume_state is not None:
        config = TrainConfig(**{**resume_state["train_config"], "resume": True})
    set_determinism(seed=config.seed)
    inference = inference_defaults(config.inference)
    device = select_device(config.device, local_rank)
    dtype = amp_dtype(config.amp, device)
    log = RunLog(run_dir, enabled=main)

    declared = sorted(spec.labels) if spec.labels else None
    # 2D masks without a dataset.json are taken as binary (0/1 or 0/255).
    allowed = declared or (None if spec.is_volumetric else [0, 1])
    modality = spec.modality.upper()
    prep = Preprocessing(
        volumetric=spec.is_volumetric,
        orientation=config.orientation if spec.is_volumetric else None,
        spacing=target_spacing(spec, train_records, config.spacing, config.orientation),
        intensity="window" if modality == "CT" else "percentile",
        image_size=None if spec.is_volumetric else config.image_size,
    )
    geometry = geometry_transforms(
        prep,
        with_label=True,
        allowed_labels=allowed,
        stray_to_background=config.stray_labels_to_background,
    )
    train_cases = load_cases(train_records, geometry, spec.is_volumetric, config.cache_dir)
    val_cases = load_cases(val_records, geometry, spec.is_volumetric, config.cache_dir)
    label_check = geometry.transforms[-1]
    for message in label_check.log:
        log.event(message)
    if prep.intensity == "window":
        prep = Preprocessing(**{**prep.to_dict(), "window": ct_window(train_cases)})
    intensity = intensity_transforms(prep)
    for case in train_cases + val_cases:
        case["image"] = convert_to_tensor(
            intensity({"image": case["image"]})["image"], track_meta=False
        )
    labels = declared or sorted(
        {int(v) for c in train_cases + val_cases for v in torch.unique(c["label"]).tolist()} | {0}
    )
    label_names = spec.labels or {v: f"label_{v}" for v in labels}
    num_classes = max(labels) + 1
    fg_names = [label_names.get(v, f"label_{v}") for v in range(1, num_classes)]

    encoder = get_encoder(config.encoder)
    in_channels = config.slices if spec.is_volumetric else 3
    arch = architecture(encoder, in_channels, num_classes)
    model, weights_record = _initial_model(config, encoder, arch)
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # flips swap anatomical sides (anterior/posterior, left/right): off for volumes unless asked
    augment = augmentation_from_dict({"flips": not spec.is_volumetric, **config.augment})
    data_meta = {
        **prep.to_dict(),
        "slices": config.slices,
        # mirroring TTA may only use flips the model was trained with
        "mirror_axes": [-2, -1] if augment.active and augment.flips else [],
        "labels": {str(k): v for k, v in label_names.items()},
        "modality": spec.modality,
        # what `medgraft predict` does with this model unless told otherwise (recipe defaults)
        "inference": inference,
    }
    resolved = {
        "train_config": asdict(config),
        "augmentation": asdict(augment),
        "num_classes": num_classes,
        "weights_record": weights_record,
        "preprocessing": prep.to_dict(),
        "device_used": str(device),
        "amp_dtype": str(dtype),
        "world_size": world_size,
        "train_cases": [r["case_id"] for r in train_records],
        "val_cases": [r["case_id"] for r in val_records],
    }
    log.write_config(resolved)

    sample_transform = Compose([Augment2Dd(["image", "label"], augment)])
    dataset = (
        SliceStackDataset(train_cases, config.slices, sample_transform)
        if spec.is_volumetric
        else Dataset(
            [{"image": c["image"], "label": c["label"]} for c in train_cases], sample_transform
        )
    )
    foreground = (
        dataset.foreground()
        if spec.is_volumetric
        else [bool((c["label"] > 0).any()) for c in train_cases]
    )
    sampler = BalancedSampler(
        foreground, config.foreground_ratio, config.seed, rank, world_size, config.samples_per_epoch
    )
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        drop_last=len(sampler) > config.batch_size,
        # cases of different in-plane sizes meet in one batch: pad to the largest
        collate_fn=collate_padded,
    )
    network = model
    if world_size > 1:
        network = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=config.freeze_encoder_epochs > 0,
        )
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config.lr, config.encoder_lr_mult),
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lr_schedule(
            config.schedule, config.warmup_epochs * len(loader), config.epochs * len(loader)
        ),
    )
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    loss_fn = DiceCELoss(
        to_onehot_y=True, softmax=True, lambda_dice=config.lambda_dice, lambda_ce=config.lambda_ce
    )
    predictor = Predictor(
        model, data_meta, device=device, batch_size=config.batch_size, amp_dtype=dtype
    )

    best_dice, best_epoch, first_epoch = -math.inf, 0, 1
    if resume_state is not None:
        model.load_state_dict(resume_state["model_state"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        scaler.load_state_dict(resume_state["scaler"])
        _set_rng_state(resume_state["rng"])
        best_dice, best_epoch = resume_state["best_dice"], resume_state["best_epoch"]
        first_epoch = resume_state["epoch"] + 1
        log.event(f"resumed from {run_dir / 'last.pt'} after epoch {resume_state['epoch']}")
    log.start_metrics(fg_names, keep_epochs=first_epoch - 1)
    if main:
        console.print(
            f"[bold]training[/] {len(train_cases)} cases ({len(dataset)} samples), validating "
            f"{len(val_cases)}; encoder {encoder.name}, "
            f"weights {weights_record['encoder']['origin']}, device {device}"
            + (f" x {world_size} processes" if world_size > 1 else "")
        )

    def training_state(completed_epoch: int, val_dice: float) -> dict:
        """Everything ``--resume`` needs, as plain values (loadable with weights_only)."""
        return {
            "architecture": arch,
            "data": data_meta,
            "config": resolved,
            "train_config": asdict(config),
            "model_state": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": _rng_state(),
            "epoch": completed_epoch,
            "val_dice": val_dice,
            "best_dice": best_dice,
            "best_epoch": best_epoch,
        }

    epoch = first_epoch - 1
    in_batches = False
    try:
        for epoch in range(first_epoch, config.epochs + 1):
            epoch_start = time.perf_counter()
            sampler.set_epoch(epoch)
            sample_transform.set_random_state(seed=(config.seed * 1_000 + epoch) * 64 + rank)
            frozen = epoch <= config.freeze_encoder_epochs
            set_encoder_frozen(model, frozen)
            network.train()
            if frozen:
                model.encoder.eval()  # keep pretrained BatchNorm statistics while frozen
            losses = []
            samples = 0
            in_batches = True
            with _progress(enabled=main) as progress:
                task = progress.add_task(f"epoch {epoch}/{config.epochs}", total=len(loader))
                for batch in loader:
                    images = batch["image"].to(device, non_blocking=True)
                    targets = batch["label"].to(device, non_blocking=True)
                    if config.channels_last:
                        images = images.contiguous(memory_format=torch.channels_last)
                    with torch.autocast(
                        device.type, dtype=dtype or torch.float32, enabled=dtype is not None
                    ):
                        loss = loss_fn(network(images), targets)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if config.grad_clip > 0:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    losses.append(loss.detach().item())
                    samples += len(images)
                    speed = samples / (time.perf_counter() - epoch_start)
                    progress.update(
                        task,
                        advance=1,
                        description=(
                            f"epoch {epoch}/{config.epochs} loss {np.mean(losses):.3f} "
                            f"{speed:.0f} samples/s"
                        ),
                    )
            train_seconds = time.perf_counter() - epoch_start
            in_batches = False
            if main:
                dice, hd95 = validate(predictor, val_cases, num_classes)
                mean_dice = float(np.nanmean(dice)) if val_cases else float("nan")
                improved = not val_cases or mean_dice > best_dice
                if improved:
                    best_dice, best_epoch = mean_dice, epoch
                payload = training_state(epoch, mean_dice)
                seconds = time.perf_counter() - epoch_start
                # metrics first: a crash between the two repeats the epoch, whose row resume drops
                log.epoch(
                    epoch,
                    float(np.mean(losses)),
                    mean_dice,
                    dice,
                    hd95,
                    scheduler.get_last_lr()[-1],
                    seconds,
                    samples * world_size / train_seconds,
                )
                save_checkpoint(payload, run_dir / "last.pt")
                if improved:
                    save_checkpoint(payload, run_dir / "best.pt")
                dice_text = ", ".join(f"{n} {d:.3f}" for n, d in zip(fg_names, dice, strict=True))
                console.print(
                    f"epoch {epoch}: loss {np.mean(losses):.4f}, val Dice {mean_dice:.3f} "
                    f"({dice_text}) {seconds:.0f}s{' *best*' if improved else ''}"
                )
            if world_size > 1:
                dist.barrier()
    except KeyboardInterrupt:
        if main and in_batches:
            # Ctrl-C mid-epoch: keep what this epoch learned; --resume then re-runs the epoch
            state = training_state(epoch - 1, float("nan"))
            save_checkpoint({**state, "interrupted_in_epoch": epoch}, run_dir / "last.pt")
            log.event(f"interrupted during epoch {epoch}; saved last.pt")
        if main:
            console.print(f"interrupted; continue with --resume ({run_dir / 'last.pt'})")
        raise
    finally:
        log.close()
    return TrainResult(
        run_dir,
        best_dice,
        best_epoch,
        [c["record"] for c in val_cases],
        time.perf_counter() - started,
    )


def _initial_model(config: TrainConfig, encoder, arch: dict):
    """Build the model from --weights, or from an earlier run with --init-from."""
    if config.init_from is None:
        weights = resolve_weights(
            encoder, config.weights, offline=config.offline, weights_dir=config.weights_dir
        )
        model = build_segmenter(arch, encoder, weights)
        if weights.origin == "download":
            weights = record_download(weights, encoder)
        return model, {"encoder": weights.record(), "decoder": "random"}
    checkpoint = load_checkpoint(config.init_from)
    model = build_segmenter(arch, encoder)
    copied = transfer_state(
        model, checkpoint["architecture"], checkpoint["model_state"], config.init_part
    )
    path = resolve_checkpoint_path(config.init_from)
    record = {
        "origin": "init-from",
        "path": str(path.resolve()),
        "sha256": sha256_of(path),
        "parts": copied,
        "source_run_weights": checkpoint["config"].get("weights_record"),
    }
    return model, {"encoder": record, "decoder": record if "decoder" in copied else "random"}


def parameter_groups(model: torch.nn.Module, lr: float, encoder_lr_mult: float) -> list[dict]:
    """Encoder parameters at ``lr * encoder_lr_mult``, the decoder and head at ``lr``."""
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    rest = [p for p in model.parameters() if id(p) not in encoder_ids]
    return [
        {"params": list(model.encoder.parameters()), "lr": lr * encoder_lr_mult, "name": "encoder"},
        {"params": rest, "lr": lr, "name": "decoder"},
    ]


def lr_schedule(kind: str, warmup_steps: int, total_steps: int):
    """LR factor per step: linear warm-up, then nnU-Net's poly decay (power 0.9) or cosine."""
    if kind not in {"poly", "cosine"}:
        raise MedgraftError(f"--schedule must be poly or cosine, not '{kind}'")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return (1.0 - progress) ** 0.9

    return factor


def set_encoder_frozen(model: torch.nn.Module, frozen: bool) -> None:
    for parameter in model.encoder.parameters():
        parameter.requires_grad_(not frozen)


def validate(
    predictor: Predictor, cases: list[dict], num_classes: int
) -> tuple[list[float], list[float]]:
    """Mean Dice and HD95 (mm) per foreground class over whole cases (volumes reassembled)."""
    nan = [float("nan")] * (num_classes - 1)
    if not cases:
        return nan, nan
    dice, hd95 = [], []
    for case in cases:
        pred = predictor.segment(case["image"]).labels
        truth = case["label"][0]
        dice.append(dice_per_class(pred, truth, num_classes))
        hd95.append(hd95_per_class(pred, truth, num_classes, case["spacing"][: truth.ndim]))
    hd = np.array(hd95, dtype=float)
    hd[~np.isfinite(hd)] = np.nan  # a missed class has no distance; Dice already counts it
    with np.errstate(all="ignore"):
        return (
            [float(v) for v in np.nanmean(np.array(dice, dtype=float), axis=0)],
            [float(v) for v in np.nanmean(hd, axis=0)],
        )


def _prepare_run_dir(run_dir: Path, config: TrainConfig, main: bool) -> dict | None:
    """Check the run folder; with ``resume``, return the state to continue from."""
    if run_dir.exists() and not run_dir.is_dir():
        raise MedgraftError(f"{run_dir}: exists and is not a folder")
    last = run_dir / "last.pt"
    if config.resume:
        if not last.exists():
            raise MedgraftError(f"{run_dir}: no last.pt to resume from")
        state = load_checkpoint(last)
        if "optimizer" not in state:
            raise MedgraftError(f"{last}: holds no optimizer state to resume from")
        return state
    if last.exists() and not config.overwrite:
        raise MedgraftError(
            f"{run_dir}: already holds a training run; pass --resume to continue it, "
            "--overwrite to replace it, or choose another --output"
        )
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    return None


def _rng_state() -> dict:
    """Python, NumPy and torch RNG states as plain values (loadable with weights_only)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def _distributed_setup(device: str) -> tuple[int, int, int]:
    """(rank, world size, local rank); joins the process group when run under torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size > 1 and not dist.is_initialized():
        use_nccl = device != "cpu" and torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if use_nccl else "gloo")
    if world_size > 1:
        return dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def _is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _progress(enabled: bool = True) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not enabled,
    )
