"""Reproducible subsets of the shared real datasets (``../shared/data``) for benchmarks.

Subsets are folders that point at the shared files (absolute paths in a dataset.json, or
symbolic links), so nothing is copied and the data's licence stays with it there.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from medgraft.lab import CHECKOUT

CARRIED = CHECKOUT / "shared" / "data"
"""Where a copy of the checkout sent to a GPU machine carries the data: ``shared/data`` inside."""
SHARED = Path(
    os.environ.get("MEDGRAFT_SHARED_DATA")
    or (CARRIED if CARRIED.is_dir() else CHECKOUT.parent / "shared" / "data")
)
"""The shared data, ``../shared/data`` beside the checkout, or ``shared/data`` inside it when a
copy carries it there (a GPU machine); ``MEDGRAFT_SHARED_DATA`` names another copy."""


def hippocampus_subset(target: Path, cases: int, seed: int) -> Path:
    """An MSD dataset folder listing ``cases`` random labelled cases of the shared copy."""
    source = SHARED / "hippocampus"
    manifest = json.loads((source / "dataset.json").read_text())
    chosen = random.Random(seed).sample(manifest["training"], cases)
    manifest["training"] = [
        {k: str((source / v).resolve()) for k, v in entry.items()} for entry in chosen
    ]
    manifest["test"] = []
    target.mkdir(parents=True, exist_ok=True)
    (target / "dataset.json").write_text(json.dumps(manifest, indent=1))
    return target


def kvasir_subset(target: Path, cases: int, seed: int) -> Path:
    """An images/ + masks/ folder of symbolic links to ``cases`` random Kvasir-SEG images."""
    source = SHARED / "kvasir-seg"
    names = sorted(p.name for p in (source / "images").glob("*.jpg"))
    for sub in ("images", "masks"):
        (target / sub).mkdir(parents=True, exist_ok=True)
    for name in random.Random(seed).sample(names, cases):
        for sub in ("images", "masks"):
            link = target / sub / name
            if not link.exists():
                link.symlink_to(source / sub / name)
    return target
