"""The learning-speed study keeps every scored run: rescoring one method's run of a seed (after
a fix) replaces that run's rows only, never the other methods' or seeds' runs."""

from __future__ import annotations

import csv
from pathlib import Path

from medgraft.lab import learning_speed


def _rows(path: Path) -> list[tuple[str, str, str]]:
    with path.open() as handle:
        return [(r["method"], r["seed"], r["dice"]) for r in csv.DictReader(handle)]


def test_rescoring_one_method_keeps_the_other_runs(tmp_path: Path):
    path = tmp_path / "learning_speed.csv"
    first = [
        {"method": method, "seed": seed, "dice": "0.5"}
        for seed in (0, 1)
        for method in ("nnunet-2d", "medgraft-scratch", "medgraft-imagenet")
    ]
    learning_speed._replace_runs(path, 0, {"nnunet-2d", "medgraft-scratch", "medgraft-imagenet"},
                                 [r for r in first if r["seed"] == 0])  # fmt: skip
    learning_speed._replace_runs(path, 1, {"nnunet-2d", "medgraft-scratch", "medgraft-imagenet"},
                                 [r for r in first if r["seed"] == 1])  # fmt: skip
    rescored = [{"method": "medgraft-imagenet", "seed": 0, "dice": "0.9"}]
    learning_speed._replace_runs(path, 0, {"medgraft-imagenet"}, rescored)

    assert _rows(path) == [
        ("medgraft-imagenet", "0", "0.9"),
        ("medgraft-scratch", "0", "0.5"),
        ("nnunet-2d", "0", "0.5"),
        ("medgraft-imagenet", "1", "0.5"),
        ("medgraft-scratch", "1", "0.5"),
        ("nnunet-2d", "1", "0.5"),
    ]
