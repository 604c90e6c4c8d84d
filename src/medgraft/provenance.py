"""What a timing or memory figure needs beside the number: the machine, the versions, the
commit, the date, and whether other jobs shared the cores while it was measured. Used by
``medgraft crossval`` (each fold's wall time and load) and by the lab's benchmarks.

    with Measurement() as measured:
        ...                                  # the work, in this process or its children
    append_csv(csv_path, [{**measured.record(), "slices_per_s": speed}])  # medgraft.files

"Other jobs" is measured, not remembered: the CPU time the whole machine spent busy (from
``/proc/stat``) minus what this process and its waited-for children used, per second of wall
time. ``other_jobs_cores`` near 0 means the cores were ours alone; NaN where the system has no
``/proc/stat`` (not Linux), so the load is unknown rather than claimed to be nil.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import resource
import subprocess
import threading
import time
from contextlib import suppress
from pathlib import Path

SOURCE_CHECKOUT = Path(__file__).resolve().parents[2]
"""Where medgraft's source lies when it runs from a checkout (``src/medgraft``): the commit a
record names is that checkout's; an installed copy has no ``.git`` there and names none."""

SHARED_ABOVE = 0.25
"""Cores' worth of other jobs above which a measurement is marked as sharing the machine."""


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores); NaN off Linux."""
    stat = Path("/proc/stat")
    if not stat.exists():
        return math.nan
    fields = [int(v) for v in stat.read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def _tree_seconds() -> float:
    """CPU seconds of this process and every live descendant, each with the children it has
    reaped: unlike :func:`_own_seconds` it includes children still running (a training
    subprocess in the middle of its work)."""
    parents, ticks = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while the table was read
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        ticks[pid] = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    tree, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier += children
    return sum(ticks.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, str]:
    """CPU model and core count, Python, torch and medgraft versions, commit and date."""
    import torch

    import medgraft

    cpuinfo = Path("/proc/cpuinfo")
    model = platform.processor() or platform.machine()
    if cpuinfo.exists():
        names = [ln for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        model = names[0].split(":", 1)[1].strip() if names else model
    # a copy of the tree sent to another machine says which commit it is (its .git may be stale)
    commit = os.environ.get("MEDGRAFT_COMMIT", "")
    if not commit and (SOURCE_CHECKOUT / ".git").exists():
        with suppress(FileNotFoundError):  # no git there
            found = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=SOURCE_CHECKOUT,
                capture_output=True,
                text=True,
            )
            commit = found.stdout.strip()
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
        self.busy, self.own, self.tree = _busy_seconds(), _own_seconds(), _tree_seconds()
        return self

    def so_far(self) -> tuple[float, float]:
        """Wall seconds and other jobs' cores from the start until now, while the block runs."""
        seconds = time.perf_counter() - self.started
        others = (_busy_seconds() - self.busy) - (_tree_seconds() - self.tree)
        return seconds, _cores(others, seconds)

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
        others = (_busy_seconds() - self.busy) - (_own_seconds() - self.own)
        self.other_jobs_cores = _cores(others, self.seconds)

    def record(self) -> dict[str, str]:
        return {
            **machine(),
            "wall_seconds": f"{self.seconds:.1f}",
            "other_jobs_cores": f"{self.other_jobs_cores:.2f}",
            "shared": shared(self.other_jobs_cores),
        }


def _cores(other_seconds: float, seconds: float) -> float:
    """Other jobs' CPU seconds per wall second (never below 0; NaN stays unknown)."""
    cores = other_seconds / max(seconds, 1e-9)
    return cores if math.isnan(cores) else max(0.0, cores)


def shared(other_jobs_cores: float) -> str:
    """Whether other jobs shared the cores: ``yes``, ``no``, or ``unknown`` (no load measured)."""
    if math.isnan(other_jobs_cores):
        return "unknown"
    return "yes" if other_jobs_cores > SHARED_ABOVE else "no"


class Heartbeat:
    """Write a running :class:`Measurement` (with ``extra``: what is being timed) to ``path``
    every ``every`` seconds, so a call that is killed (a session's end) leaves what it had
    spent; the file goes when the block ends without an error, and stays for the next call to
    count when it fails."""

    def __init__(
        self, measured: Measurement, path: Path, every: float = 30.0, extra: dict | None = None
    ) -> None:
        self.measured, self.path, self.every, self.extra = measured, path, every, extra or {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            self.write()

    def write(self) -> None:
        seconds, other_cores = self.measured.so_far()
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({**self.extra, "seconds": seconds, "other_jobs_cores": other_cores})
        )
        tmp.replace(self.path)

    def __enter__(self) -> Heartbeat:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.write()
        self._thread.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if exc_type is None:
            self.path.unlink(missing_ok=True)
        else:
            self.write()
