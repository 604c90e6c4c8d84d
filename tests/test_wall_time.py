"""Wall time of cross-validation folds survives a killed call: a training subprocess's CPU
counts as the measurement's own while it runs, and a call killed mid-fold (a session's end)
leaves a heartbeat the next call adds to the run's time (``medgraft crossval``'s records)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medgraft import crossval, provenance


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads Linux's /proc")
def test_a_running_child_counts_as_our_own_cpu():
    before = provenance._tree_seconds()
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        while _cpu_seconds(child.pid) < 0.5:
            time.sleep(0.05)
        child_cpu = _cpu_seconds(child.pid)
        # both sides are whole clock ticks summed in floats (586.77 - 586.22 < 0.55): half a
        # tick of slack absorbs the rounding, never a missed tick
        half_tick = 0.5 / os.sysconf("SC_CLK_TCK")
        assert provenance._tree_seconds() - before >= child_cpu - half_tick
    finally:
        child.kill()
        child.wait()


def test_heartbeat_goes_after_a_clean_call_and_stays_after_a_failed_one(tmp_path: Path):
    beat = tmp_path / "wall.running.json"
    with (
        provenance.Measurement() as measured,
        provenance.Heartbeat(measured, beat, every=0.05, extra={"options_sha256": "a"}),
    ):
        time.sleep(0.3)
        written = json.loads(beat.read_text())
        assert written["options_sha256"] == "a" and "other_jobs_cores" in written
        assert written["seconds"] >= 0.1  # the thread beats on after the first write
    assert not beat.exists()
    with (
        pytest.raises(RuntimeError),
        provenance.Measurement() as measured,
        provenance.Heartbeat(measured, beat),
    ):
        time.sleep(0.1)
        raise RuntimeError("training failed")
    assert json.loads(beat.read_text())["seconds"] >= 0.1


def test_a_killed_call_is_added_to_the_fold_once(tmp_path: Path):
    (tmp_path / "wall.json").write_text(
        json.dumps({"seconds": 50.0, "calls": 1, "other_jobs_cores": 0.0, "options_sha256": "a"})
    )
    (tmp_path / crossval.HEARTBEAT).write_text(
        json.dumps({"seconds": 100.0, "other_jobs_cores": 1.5, "options_sha256": "a"})
    )
    crossval.count_killed_call(tmp_path, "a")
    crossval.count_killed_call(tmp_path, "a")  # the heartbeat was used up: nothing more
    wall = json.loads((tmp_path / "wall.json").read_text())
    assert (wall["seconds"], wall["calls"], wall["killed_calls"]) == (150.0, 2, 1)
    assert wall["other_jobs_cores"] == pytest.approx(1.0)
    assert not (tmp_path / crossval.HEARTBEAT).exists()


def test_times_of_a_changed_recipe_start_anew(tmp_path: Path):
    """A fold folder that held the single-view run of an earlier recipe (its fingerprint in
    its config.json, its wall.json from before fingerprints were written there) times a
    multi-view recipe's runs from zero."""
    (tmp_path / "config.json").write_text(json.dumps({"options_sha256": "axial"}))
    (tmp_path / "wall.json").write_text(
        json.dumps({"seconds": 600.0, "calls": 1, "other_jobs_cores": 0.0})
    )
    crossval.add_wall_time(tmp_path, "axial", 10.0, 0.0)
    assert json.loads((tmp_path / "wall.json").read_text())["seconds"] == 610.0
    crossval.add_wall_time(tmp_path, "axial+coronal", 20.0, 0.0)
    wall = json.loads((tmp_path / "wall.json").read_text())
    assert (wall["seconds"], wall["calls"], wall["options_sha256"]) == (20.0, 1, "axial+coronal")


def test_a_heartbeat_of_other_options_is_dropped(tmp_path: Path):
    (tmp_path / crossval.HEARTBEAT).write_text(
        json.dumps({"seconds": 100.0, "other_jobs_cores": 0.0, "options_sha256": "old"})
    )
    crossval.count_killed_call(tmp_path, "new")
    assert not (tmp_path / "wall.json").exists()
    assert not (tmp_path / crossval.HEARTBEAT).exists()


def _wall(folder: Path, seconds: float, fingerprint: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    wall = {"seconds": seconds, "calls": 1, "other_jobs_cores": 0.5, "options_sha256": fingerprint}
    (folder / "wall.json").write_text(json.dumps(wall))


def test_a_views_fold_adds_the_time_of_a_view_run_reused_from_before(tmp_path: Path):
    """The coronal run was trained alone before (its own wall.json); the call that trained
    the axial run is timed in the fold's folder; a stale time of other options is left out."""
    runs = {tmp_path / "coronal" / "fold_0": "c", tmp_path / "axial" / "fold_0": "a"}
    fold = crossval.fold_folder(tmp_path, 0, list(runs))
    assert fold == tmp_path / "views_fold_0"
    _wall(tmp_path / "coronal" / "fold_0", 300.0, "c")
    _wall(tmp_path / "axial" / "fold_0", 999.0, "an axial run of other options")
    _wall(fold, 100.0, crossval.fold_fingerprint(runs))
    wall = crossval.fold_wall_time(fold, runs)
    assert (wall["seconds"], wall["calls"]) == (400.0, 2)
    assert crossval.fold_fingerprint(runs) == "a+c"  # the views' order does not matter
    # no time recorded on the axial run's own options: said, not made up
    assert crossval.fold_wall_time(fold, {tmp_path / "axial" / "fold_0": "a"}) is None
