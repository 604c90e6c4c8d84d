"""The demo's block and its page (``docs/results/demo/README.md``), from ``demo/dice.csv`` and
``demo/runs.csv``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medgraft.config.schema import DemoOptions
from medgraft.files import read_csv
from medgraft.lab.measured import note
from medgraft.lab.reports.common import RESULTS, block, median, render


def demo_case_rows(root: Path) -> list[dict[str, str]]:
    """``dice.csv``: the held-out cases' scores of each measured run (``run``, ``commit``)."""
    return read_csv(root / RESULTS / "demo" / "dice.csv")


def demo_scores(rows: list[dict[str, str]]) -> dict[str, dict[str, float]]:
    """``{metric: {class: mean over the cases}}`` of one run's rows, as ``medgraft evaluate``
    summarises (non-finite values left out), and ``{"mean": {"dice": ...}}``: the mean of
    the class means."""
    scores: dict[str, dict[str, float]] = {}
    for column in rows[0]:
        if "_" in column and column not in ("case_id", "mean_dice"):
            metric, name = column.split("_", 1)
            values = np.array([float(r[column]) for r in rows])
            scores.setdefault(metric, {})[name] = float(values[np.isfinite(values)].mean())
    scores["mean"] = {"dice": float(np.mean(list(scores["dice"].values())))}
    return scores


def demo_runs_scores(root: Path) -> list[dict[str, dict[str, float]]]:
    """Each measured run's summary (:func:`demo_scores`), in run order."""
    rows = demo_case_rows(root)
    runs = sorted({int(r["run"]) for r in rows})
    return [demo_scores([r for r in rows if int(r["run"]) == run]) for run in runs]


def demo_runs(root: Path) -> list[dict]:
    return read_csv(root / RESULTS / "demo" / "runs.csv")


def _range(values: list[float], form: str) -> str:
    """One value when every run gave it (at the shown precision), else 'low to high'."""
    low, high = format(min(values), form), format(max(values), form)
    return low if low == high else f"{low} to {high}"


def demo_timing(runs: list[dict], commit: str) -> dict | None:
    """The demo's wall time at the scores' commit (median and range), the install's median."""
    demo = [
        float(r["wall_seconds"]) for r in runs if r["command"] == "demo" and r["commit"] == commit
    ]
    install = [float(r["wall_seconds"]) for r in runs if r["command"] == "install"]
    if not demo or not install:
        return None
    alone = sum(
        r["shared"] == "no" for r in runs if r["command"] == "demo" and r["commit"] == commit
    )
    return {
        "machine": runs[-1],
        "commit": commit,
        "demo": median(demo),
        "demo_runs": len(demo),
        "range": _range(demo, ".0f"),
        "alone": alone,
        "install_minutes": median(install) / 60,
        "installs": len(install),
    }


def demo_readme(root: Path) -> str:
    rows, runs = demo_case_rows(root), demo_runs_scores(root)
    data = root / DemoOptions().data
    classes = list(runs[0]["dice"])
    return block(
        "demo_block.md.j2",
        epochs=DemoOptions().epochs,
        held_out=len({r["case_id"] for r in rows}),
        labelled=len(list((data / "imagesTr").glob("*.nii.gz"))),
        unlabelled=len(list((data / "imagesTs").glob("*.nii.gz"))),
        timing=demo_timing(demo_runs(root), rows[-1]["commit"]),
        mean=_range([run["mean"]["dice"] for run in runs], ".3f"),
        runs=len(runs),
        per_class=", ".join(
            f"{n} {_range([run['dice'][n] for run in runs], '.3f')}" for n in classes
        ),
        hd95=" / ".join(_range([run["hd95"][n] for run in runs], ".1f") for n in classes),
        measured=note(root, "demo"),
    )


def demo_page(root: Path) -> str:
    """``demo/README.md``: every timed run, and the Dice range of the measured runs."""
    return render(
        "demo.md.j2",
        mean_dice=_range([run["mean"]["dice"] for run in demo_runs_scores(root)], ".3f"),
        measured=note(root, "demo"),
        runs=demo_runs(root),
    )
