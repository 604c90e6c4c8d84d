"""The demo measured as a newcomer meets it: ``medgraft demo`` run several times at one commit,
each run timed (``runs.csv``) and its held-out cases' scores kept per run (``dice.csv``), so the
README gives the range of both rather than one run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from medgraft.files import append_csv, read_csv, write_csv
from medgraft.lab import CHECKOUT
from medgraft.provenance import Measurement, machine

DEMO_RESULTS = CHECKOUT / "docs" / "results" / "demo"


def time_demo(output: Path) -> dict[str, str]:
    """One ``medgraft demo`` into ``output``, timed with the machine and the load."""
    command = [str(Path(sys.executable).with_name("medgraft")), "demo", "--output", str(output)]
    with Measurement() as measured:
        returncode = subprocess.run(command).returncode
    if returncode != 0:
        sys.exit(f"{' '.join(command)} exited with {returncode}; nothing recorded")
    return {"command": "demo", **measured.record()}


def case_rows(output: Path, run: int, commit: str) -> list[dict[str, str]]:
    """The per-case rows of one demo's ``dice.csv`` (its summary rows left out), with the run's
    number and commit in front."""
    rows = read_csv(output / "dice.csv")
    return [
        {"run": str(run), "commit": commit, **row}
        for row in rows
        if row["case_id"] not in ("MEAN", "STD")
    ]


def record_runs(outputs: list[Path], timings: list[dict[str, str]], results: Path) -> None:
    """Append the timings to ``runs.csv``; ``dice.csv`` becomes these runs' per-case rows (the
    scores of runs at other commits are no longer the demo's)."""
    append_csv(results / "runs.csv", timings)
    commit = timings[-1]["commit"]
    rows = [row for run, out in enumerate(outputs, start=1) for row in case_rows(out, run, commit)]
    write_csv(results / "dice.csv", rows, list(rows[0]))


def measure(repeats: int, work: Path, results: Path = DEMO_RESULTS) -> None:
    """Run the demo ``repeats`` times in turn (never two at once: they would share the cores)."""
    outputs = [work / f"demo-{run}" for run in range(1, repeats + 1)]
    timings = []
    for output in outputs:
        timings.append(time_demo(output))
        print(f"demo: {timings[-1]['wall_seconds']} s, other jobs "
              f"{timings[-1]['other_jobs_cores']} cores", flush=True)  # fmt: skip
    if len({t["commit"] for t in timings}) != 1 or timings[-1]["commit"] != machine()["commit"]:
        sys.exit("the checkout's commit changed while the demo was measured; nothing recorded")
    record_runs(outputs, timings, results)
