"""Where and how computation runs: device, mixed precision, torchrun ranks, RNG state, progress.

Shared by training and inference, and light on imports (torch and rich only), so that
``medgraft predict`` never loads the training stack to choose a device.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from medgraft.errors import MedgraftError, first_line

console = Console(stderr=True, soft_wrap=True, highlight=False)
"""Status lines and progress bars go to stderr; results go to stdout (:data:`stdout`)."""
stdout = Console(soft_wrap=True)

AMP_CHOICES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise MedgraftError("--device cuda was requested but no CUDA GPU is available")
    try:
        return torch.device(f"cuda:{local_rank}" if name == "cuda" else name)
    except RuntimeError as exc:  # torch names the device types it knows
        raise MedgraftError(f"--device {name}: {first_line(exc)}") from None


def is_cuda(device: str) -> bool:
    """Whether ``--device`` trains on a CUDA GPU: ``cuda`` (or ``cuda:N``), or ``auto`` where
    one is available (what :func:`select_device` picks)."""
    return torch.cuda.is_available() if device == "auto" else device.startswith("cuda")


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """``auto``: fp16 on CUDA, full precision on the CPU (bf16 there is slow without AMX)."""
    if mode == "auto":
        return torch.float16 if device.type == "cuda" else None
    if mode not in AMP_CHOICES:
        raise MedgraftError(f"--amp must be auto, fp16, bf16 or off, not '{mode}'")
    if mode == "fp16" and device.type != "cuda":
        raise MedgraftError("--amp fp16 needs a CUDA device; use bf16 or off on the CPU")
    return AMP_CHOICES[mode]


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes, as torchrun sets them (0, 1 alone)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def distributed_setup(device: str) -> tuple[int, int, int]:
    """(rank, world size, local rank); joins the process group when run under torchrun."""
    _, world_size = rank_and_world()
    if world_size > 1 and not dist.is_initialized():
        use_nccl = device != "cpu" and torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if use_nccl else "gloo")
    if world_size > 1:
        return dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def rng_state() -> dict:
    """Python, NumPy and torch RNG states as plain values (loadable with weights_only)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def progress(*extra: ProgressColumn, enabled: bool = True) -> Progress:
    """A transient progress bar on stderr: description, bar, n/N, time left, then ``extra``."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        *extra,
        console=console,
        transient=True,
        disable=not enabled,
    )
