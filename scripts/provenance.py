"""What a timing or memory figure needs beside the number: the machine, the versions, the
commit, the date, and whether other jobs shared the cores while it was measured.

    with Measurement() as measured:
        ...                                  # the work, in this process or its children
    append_row(csv_path, {**measured.record(), "slices_per_s": speed})

"Other jobs" is measured, not remembered: the CPU time the whole machine spent busy (from
``/proc/stat``) minus what this process and its waited-for children used, per second of wall
time. ``other_jobs_cores`` near 0 means the cores were ours alone.
"""

from __future__ import annotations

import csv
import datetime
import os
import platform
import resource
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_ABOVE = 0.25
"""Cores' worth of other jobs above which a measurement is marked as sharing the machine."""


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def machine() -> dict[str, str]:
    """CPU model and core count, Python, torch and medgraft versions, commit and date."""
    import torch

    import medgraft

    cpuinfo = Path("/proc/cpuinfo")
    model = platform.processor() or platform.machine()
    if cpuinfo.exists():
        names = [ln for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        model = names[0].split(":", 1)[1].strip() if names else model
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "date": datetime.date.today().isoformat(),
        "commit": commit,
        "cpu": model,
        "cores": str(os.cpu_count()),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "medgraft": medgraft.__version__,
    }


class Measurement:
    """Wall time of a ``with`` block and the cores other jobs used meanwhile."""

    def __enter__(self) -> Measurement:
        self.started = time.perf_counter()
        self.busy, self.own = _busy_seconds(), _own_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
        others = (_busy_seconds() - self.busy) - (_own_seconds() - self.own)
        self.other_jobs_cores = max(0.0, others / self.seconds)

    def record(self) -> dict[str, str]:
        return {
            **machine(),
            "wall_seconds": f"{self.seconds:.1f}",
            "other_jobs_cores": f"{self.other_jobs_cores:.2f}",
            "shared": "yes" if self.other_jobs_cores > SHARED_ABOVE else "no",
        }


def append_row(path: Path, row: dict[str, str]) -> None:
    """Add ``row`` to the CSV at ``path`` (header written with the first row)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
