"""The fold profile (``scripts/profile_fold.py``): every phase of a run timed, exclusively, into
a CSV with the machine; checked on a tiny fold of micro data, never the shared data."""

from __future__ import annotations

from pathlib import Path

import pytest

from medgraft.files import read_csv
from medgraft.lab import fold_profile
from medgraft.lab.fold_profile import PHASES, PhaseClock, profile_fold


def test_nested_phases_pause_the_outer_one(monkeypatch) -> None:
    """On a clock that advances one second per reading: each phase is charged exactly the
    readings while it was innermost, so the outer ones pause (no timing of real work)."""
    ticks = iter(range(100))
    monkeypatch.setattr(fold_profile.time, "perf_counter", lambda: float(next(ticks)))
    monkeypatch.setattr(fold_profile.time, "process_time", lambda: 0.0)
    clock = PhaseClock()
    # enters read 0, 1, 2; plots ends at 3, logs at 4, then other resumes from 4, ends at 5
    with clock.phase("other"), clock.phase("logs"), clock.phase("plots"):
        pass
    assert (clock.wall["other"], clock.wall["logs"], clock.wall["plots"]) == (2.0, 2.0, 1.0)
    assert clock.wall["setup"] == 0.0


@pytest.mark.slow
def test_a_tiny_fold_is_profiled_per_phase_into_the_csv(micro_msd: Path, tmp_path: Path) -> None:
    tiny = {"views": "axial", "folds": 2, "epochs": 2, "samples_per_epoch": 16}
    tiny |= {"batch_size": 8, "val_every": 2}
    csv = tmp_path / "fold_profile.csv"
    rows = profile_fold("hippocampus", micro_msd, tmp_path / "run", 0, csv, change=tiny)
    assert read_csv(csv) == rows and [r["phase"] for r in rows] == list(PHASES)
    wall = {r["phase"]: float(r["phase_wall_seconds"]) for r in rows}
    for phase in PHASES:
        assert wall[phase] > 0, phase  # each phase of a real run is reached
    assert sum(wall.values()) <= float(rows[0]["wall_seconds"]) + 0.1  # exclusive: no overlap
    assert sum(float(r["wall_share"]) for r in rows) == pytest.approx(1.0, abs=1e-3)
    first = rows[0]
    assert (first["recipe"], first["fold"], first["view"], first["val_every"]) == (
        "mri-2.5d", "0", "axial", "2",
    )  # fmt: skip
    assert first["cpu"] and first["torch"] and first["other_jobs_cores"] and first["commit"]
    assert (tmp_path / "run" / "fold_0" / "last.pt").is_file()
