"""medgraft checkpoints: plain tensors and values only, written atomically, loaded safely."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from medgraft.errors import MedgraftError, first_line

CHECKPOINT_FORMAT = "medgraft-checkpoint-v1"


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write to a temporary file then rename, so a crash never leaves a truncated checkpoint."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format": CHECKPOINT_FORMAT, **payload}, tmp)
    os.replace(tmp, path)


def resolve_checkpoint_path(model: str | Path) -> Path:
    """A run folder means its ``best.pt``; anything else must be a checkpoint file."""
    path = Path(model)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise MedgraftError(f"{path}: checkpoint not found")
    return path


def load_checkpoint(model: str | Path) -> dict[str, Any]:
    """Load with ``weights_only=True``: a crafted pickle cannot run code here."""
    path = resolve_checkpoint_path(model)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        raise MedgraftError(f"{path}: cannot load checkpoint ({first_line(exc)})") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise MedgraftError(f"{path}: not a medgraft checkpoint")
    return checkpoint
