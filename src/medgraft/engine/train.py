"""The training loop: 2.5D/2D fine-tuning with DiceCE, AdamW, mixed precision, checkpoints."""

from __future__ import annotations

import csv
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.losses import DiceCELoss
from monai.utils import set_determinism
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from medgraft.data.discovery import DatasetSpec, discover_dataset
from medgraft.data.slicing import SliceStackDataset
from medgraft.data.transforms import apply_case_transforms, case_transforms, sample_transforms
from medgraft.engine.checkpoint import load_checkpoint, resolve_checkpoint_path, save_checkpoint
from medgraft.engine.inference import Predictor
from medgraft.engine.metrics import dice_per_class
from medgraft.errors import MedgraftError
from medgraft.models.registry import DEFAULT_ENCODER, get_encoder
from medgraft.models.unet import architecture, build_segmenter, transfer_state
from medgraft.models.weights import record_download, resolve_weights, sha256_of

console = Console(stderr=True, soft_wrap=True, highlight=False)


@dataclass
class TrainConfig:
    """Every option of a training run; saved as ``config.json`` and inside each checkpoint."""

    data: str
    output: str
    encoder: str = DEFAULT_ENCODER
    weights: str = "imagenet"
    offline: bool = False
    epochs: int = 8
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    seed: int = 0
    slices: int = 3
    image_size: int = 256
    amp: str = "auto"
    device: str = "auto"
    overwrite: bool = False
    weights_dir: str | None = None
    freeze_encoder_epochs: int = 0
    encoder_lr_mult: float = 1.0
    warmup_epochs: int = 0
    init_from: str | None = None
    init_part: str = "encoder"


@dataclass
class TrainResult:
    run_dir: Path
    best_dice: float
    best_epoch: int
    val_cases: list[dict[str, str]]
    seconds: float


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MedgraftError("--device cuda was requested but no CUDA GPU is available")
    return torch.device(name)


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


def load_cases(
    records: list[dict], spec: DatasetSpec, labels: list[int] | None, image_size: int | None
) -> list[dict]:
    """Load and preprocess every case once, up front: a bad file stops training before it starts."""
    transform = case_transforms(volumetric=spec.is_volumetric, labels=labels, image_size=image_size)
    cases = []
    with _progress() as progress:
        for record in progress.track(records, description="loading cases"):
            loaded = apply_case_transforms(transform, record)
            _check_pair(loaded, record, spec.is_volumetric)
            cases.append(
                {
                    "image": loaded["image"].as_tensor(),
                    "label": loaded["label"].as_tensor(),
                    "case_id": record["case_id"],
                    "record": record,
                }
            )
    return cases


def _check_pair(loaded: dict, record: dict, volumetric: bool) -> None:
    image, label = loaded["image"], loaded["label"]
    expected_ndim = 4 if volumetric else 3
    if image.ndim != expected_ndim:
        kind = "3D volume" if volumetric else "2D image"
        raise MedgraftError(
            f"{record['image']}: expected a {kind}, got shape {tuple(image.shape[1:])}"
        )
    if volumetric and image.shape[0] != 1:
        raise MedgraftError(f"{record['image']}: multi-channel volumes are not supported yet")
    if image.shape[1:] != label.shape[1:]:
        raise MedgraftError(
            f"{record['label']}: label shape {tuple(label.shape[1:])} != image shape "
            f"{tuple(image.shape[1:])} ({record['image']})"
        )


def train(config: TrainConfig) -> TrainResult:
    """Run one training job into ``config.output`` and return where its best model is."""
    started = time.perf_counter()
    run_dir = _prepare_run_dir(Path(config.output), config.overwrite)
    set_determinism(seed=config.seed)
    device = select_device(config.device)
    dtype = amp_dtype(config.amp, device)
    spec = discover_dataset(config.data)
    declared = sorted(spec.labels) if spec.labels else None
    # 2D masks without a dataset.json are taken as binary (0/1 or 0/255).
    labels_for_check = declared or (None if spec.is_volumetric else [0, 1])
    image_size = None if spec.is_volumetric else config.image_size

    train_records, val_records = split_cases(spec.training, config.val_fraction, config.seed)
    (run_dir / "splits.json").write_text(
        json.dumps(
            {
                "seed": config.seed,
                "train": [r["case_id"] for r in train_records],
                "val": [r["case_id"] for r in val_records],
            },
            indent=2,
        )
    )
    train_cases = load_cases(train_records, spec, labels_for_check, image_size)
    val_cases = load_cases(val_records, spec, labels_for_check, image_size)
    labels = declared or sorted(
        {int(v) for c in train_cases + val_cases for v in torch.unique(c["label"]).tolist()} | {0}
    )
    label_names = spec.labels or {v: f"label_{v}" for v in labels}
    num_classes = max(labels) + 1

    encoder = get_encoder(config.encoder)
    in_channels = config.slices if spec.is_volumetric else 3
    arch = architecture(encoder, in_channels, num_classes)
    model, weights_record = _initial_model(config, encoder, arch)
    model = model.to(device)
    data_meta = {
        "volumetric": spec.is_volumetric,
        "slices": config.slices,
        "image_size": image_size,
        "labels": {str(k): v for k, v in label_names.items()},
        "modality": spec.modality,
    }
    resolved = {
        **asdict(config),
        "num_classes": num_classes,
        "weights_record": weights_record,
        "device_used": str(device),
        "amp_dtype": str(dtype),
    }
    (run_dir / "config.json").write_text(json.dumps(resolved, indent=2))

    dataset = (
        SliceStackDataset(train_cases, config.slices, sample_transforms())
        if spec.is_volumetric
        else Dataset(
            [{"image": c["image"], "label": c["label"]} for c in train_cases], sample_transforms()
        )
    )
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        generator=generator,
        num_workers=0,
        drop_last=len(dataset) > config.batch_size,
    )
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config.lr, config.encoder_lr_mult),
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        warmup_poly_schedule(config.warmup_epochs * len(loader), config.epochs * len(loader)),
    )
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    predictor = Predictor(
        model, data_meta, device=device, batch_size=config.batch_size, amp_dtype=dtype
    )
    fg_names = [label_names[v] for v in range(1, num_classes) if v in label_names]

    best_dice, best_epoch = -math.inf, 0
    metrics_path = run_dir / "metrics.csv"
    with metrics_path.open("w", newline="") as handle:
        csv.writer(handle).writerow(
            [
                "epoch",
                "train_loss",
                "val_mean_dice",
                *[f"val_dice_{n}" for n in fg_names],
                "lr",
                "seconds",
            ]
        )
    console.print(
        f"[bold]training[/] {len(train_cases)} cases ({len(dataset)} samples), validating "
        f"{len(val_cases)}; encoder {encoder.name}, "
        f"weights {weights_record['encoder']['origin']}, device {device}"
    )
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        frozen = epoch <= config.freeze_encoder_epochs
        set_encoder_frozen(model, frozen)
        model.train()
        if frozen:
            model.encoder.eval()  # keep pretrained BatchNorm statistics while frozen
        losses = []
        with _progress() as progress:
            task = progress.add_task(f"epoch {epoch}/{config.epochs}", total=len(loader))
            for batch in loader:
                images = batch["image"].to(device, non_blocking=True)
                targets = batch["label"].to(device, non_blocking=True)
                with torch.autocast(
                    device.type, dtype=dtype or torch.float32, enabled=dtype is not None
                ):
                    loss = loss_fn(model(torch.as_tensor(images)), torch.as_tensor(targets))
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                losses.append(loss.detach().item())
                progress.update(
                    task,
                    advance=1,
                    description=f"epoch {epoch}/{config.epochs} loss {np.mean(losses):.3f}",
                )
        per_class = validate(predictor, val_cases, num_classes)
        mean_dice = float(np.nanmean(per_class)) if val_cases else float("nan")
        seconds = time.perf_counter() - epoch_start
        with metrics_path.open("a", newline="") as handle:
            csv.writer(handle).writerow(
                [
                    epoch,
                    f"{np.mean(losses):.5f}",
                    f"{mean_dice:.5f}",
                    *[f"{d:.5f}" for d in per_class],
                    f"{scheduler.get_last_lr()[0]:.3g}",
                    f"{seconds:.1f}",
                ]
            )
        payload = {
            "architecture": arch,
            "data": data_meta,
            "config": resolved,
            "model_state": model.state_dict(),
            "epoch": epoch,
            "val_dice": mean_dice,
        }
        save_checkpoint(payload, run_dir / "last.pt")
        improved = not val_cases or mean_dice > best_dice
        if improved:
            best_dice, best_epoch = mean_dice, epoch
            save_checkpoint(payload, run_dir / "best.pt")
        dice_text = ", ".join(f"{n} {d:.3f}" for n, d in zip(fg_names, per_class, strict=False))
        console.print(
            f"epoch {epoch}: loss {np.mean(losses):.4f}, val Dice {mean_dice:.3f} "
            f"({dice_text}) {seconds:.0f}s{' *best*' if improved else ''}"
        )
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


def warmup_poly_schedule(warmup_steps: int, total_steps: int):
    """LR factor: linear warm-up, then nnU-Net's polynomial decay (power 0.9) to zero."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, 1.0 - progress) ** 0.9

    return factor


def set_encoder_frozen(model: torch.nn.Module, frozen: bool) -> None:
    for parameter in model.encoder.parameters():
        parameter.requires_grad_(not frozen)


def validate(predictor: Predictor, cases: list[dict], num_classes: int) -> list[float]:
    """Mean Dice per foreground class over whole cases (volumes reassembled from their slices)."""
    if not cases:
        return [float("nan")] * (num_classes - 1)
    scores = [
        dice_per_class(predictor.segment(c["image"]).labels, c["label"][0], num_classes)
        for c in cases
    ]
    return [float(v) for v in np.nanmean(np.array(scores, dtype=float), axis=0)]


def _prepare_run_dir(run_dir: Path, overwrite: bool) -> Path:
    if run_dir.exists() and not run_dir.is_dir():
        raise MedgraftError(f"{run_dir}: exists and is not a folder")
    if (run_dir / "last.pt").exists() and not overwrite:
        raise MedgraftError(
            f"{run_dir}: already holds a training run; choose another --output or pass --overwrite"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
