"""Which cases train and which validate: seeded splits, split files and k folds."""

from __future__ import annotations

import json
import random
from pathlib import Path

from medgraft.data.records import CaseRecord
from medgraft.errors import MedgraftError, first_line
from medgraft.files import atomic_write_text
from medgraft.runtime import is_main_process


def split_cases(
    records: list[CaseRecord], val_fraction: float, seed: int
) -> tuple[list[CaseRecord], list[CaseRecord]]:
    """Seeded, reproducible train/validation split by case."""
    if not 0.0 <= val_fraction < 1.0:
        raise MedgraftError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    order = sorted(records, key=lambda r: r.case_id)
    random.Random(seed).shuffle(order)
    n_val = max(1, round(val_fraction * len(order))) if val_fraction > 0 else 0
    if len(order) - n_val < 1:
        raise MedgraftError(f"{len(order)} labelled case(s) leave none for training")
    val, train = order[:n_val], order[n_val:]
    return sorted(train, key=lambda r: r.case_id), sorted(val, key=lambda r: r.case_id)


def explicit_split(
    records: list[CaseRecord], path: Path
) -> tuple[list[CaseRecord], list[CaseRecord]]:
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
    by_id = {r.case_id: r for r in records}
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
    records: list[CaseRecord], root: Path, folds: int, fold: int, seed: int
) -> tuple[list[CaseRecord], list[CaseRecord]]:
    """The ``fold``-th split, from ``root/splits.json`` (written on first use, then reused)."""
    if not 0 <= fold < folds:
        raise MedgraftError(f"--fold must be in [0, {folds - 1}], got {fold}")
    ids = sorted(r.case_id for r in records)
    path = root / "splits.json"
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("folds_count") != folds or sorted(stored["cases"]) != ids:
            raise MedgraftError(f"{path}: holds a split of other cases or fold count")
        splits = stored["folds"]
    else:
        splits = make_folds(ids, folds, seed)
        if is_main_process():
            root.mkdir(parents=True, exist_ok=True)
            stored = {"seed": seed, "folds_count": folds, "cases": ids, "folds": splits}
            atomic_write_text(path, json.dumps(stored, indent=1))
    by_id = {r.case_id: r for r in records}
    return [by_id[c] for c in splits[fold]["train"]], [by_id[c] for c in splits[fold]["val"]]
