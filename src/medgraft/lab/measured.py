"""When each reported figure was measured, and whether the code that decides its numbers changed
after that: the note that ``scripts/report.py`` writes beside each figure.

``report --check`` proves that the pages equal the committed CSVs; this note says whether the
CSVs still describe the code. It depends only on the CSVs and the committed history of the
checkout (never on uncommitted edits), so the check stays deterministic. Without that history (a
source tarball, a shallow clone that lacks the commit) the note says the figure was not checked
rather than failing.
"""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path

from medgraft.files import read_csv

RESULTS = Path("docs/results")

TRAINING = ("src/medgraft/training", "src/medgraft/data", "src/medgraft/models")
PREDICTION = "src/medgraft/inference"
SCORING = "src/medgraft/evaluation"
AREAS = {
    "src/medgraft/training": "training",
    "src/medgraft/data": "data",
    "src/medgraft/models": "models",
    "src/medgraft/demo.py": "the demo",
    "src/medgraft/study.py": "the study",
    PREDICTION: "prediction",
    SCORING: "scoring",
}
"""How a note names the changed producing code, path by path."""


@dataclass(frozen=True)
class Figure:
    """Where a figure's rows are and which package paths decide its numbers."""

    rows: str
    """The CSV under ``docs/results`` it is computed from (``{name}``: a study's data)."""
    code: tuple[str, ...]
    """Paths whose committed changes after the rows' commit make the figure stale."""


FIGURES = {
    "demo": Figure("demo/dice.csv", (*TRAINING, "src/medgraft/demo.py", PREDICTION, SCORING)),
    "accuracy": Figure("accuracy/folds.csv", (*TRAINING, PREDICTION, SCORING)),
    "ablations": Figure("accuracy/ablation_folds.csv", (*TRAINING, PREDICTION, SCORING)),
    "error-bands": Figure("accuracy/error_bands.csv", (*TRAINING, PREDICTION, SCORING)),
    "study": Figure("study_{name}/results.csv", (*TRAINING, "src/medgraft/study.py", SCORING)),
    "learning-speed": Figure("learning_speed_points.csv", (*TRAINING, PREDICTION, SCORING)),
    "gpu": Figure("bench/gpu_fold.csv", (*TRAINING, PREDICTION, SCORING)),
    "gpu-profiles": Figure("bench/gpu_profile_folds.csv", (*TRAINING, PREDICTION, SCORING)),
    "amp-cpu": Figure("bench/amp_cpu.csv", TRAINING),
}
"""Every figure whose note the report writes, in one place: its rows and its producing code.
The recipes (``config/``) are left out: each CV fold's options fingerprint guards them."""


def _git(root: Path, *args: str) -> str | None:
    """Standard output of a git command in ``root``, or None where git or the history fails."""
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:  # no git installed
        return None
    return done.stdout if done.returncode == 0 else None


def _head(root: Path) -> str | None:
    """The commit checked out at ``root`` when ``root`` is the top of a git checkout (a copy
    inside some other repository's folder has no history of its own)."""
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top.strip()).resolve() != root.resolve():
        return None
    head = _git(root, "rev-parse", "--verify", "--quiet", "HEAD")
    return head.strip() if head else None


@functools.lru_cache(maxsize=512)
def _later_changes(root: Path, head: str, commit: str, code: tuple[str, ...]) -> list[str] | None:
    """The areas each commit after ``commit`` up to ``head`` changed in ``code`` (one entry per
    commit, merges left out), or None when ``commit`` is not in the history. Cached per head:
    a new commit asks again."""
    if _git(root, "cat-file", "-e", f"{commit}^{{commit}}") is None:
        return None
    log = _git(root, "log", "--no-merges", "--format=%x00", "--name-only",
               f"{commit}..{head}", "--", *code)  # fmt: skip
    if log is None:
        return None
    changes = []
    for entry in log.split("\0")[1:]:
        files = entry.split()
        changes.append(", ".join(a for p, a in AREAS.items() if p in code and _under(files, p)))
    return changes


def _under(files: list[str], path: str) -> bool:
    return any(f == path or f.startswith(f"{path}/") for f in files)


def _committed_at(root: Path, head: str, csv: Path) -> str | None:
    """The last commit that changed ``csv``: the latest its rows can have been measured at."""
    found = _git(root, "log", "-1", "--format=%H", head, "--", str(csv.relative_to(root)))
    return found.strip()[:7] if found and found.strip() else None


def _ordered(root: Path, commits: list[str]) -> list[str]:
    """Commits oldest first by commit time (as recorded where git does not know them)."""
    shown = _git(root, "show", "--no-patch", "--format=%ct", *commits)
    times = shown.split() if shown else []
    if len(times) != len(commits):
        return commits
    return [c for _, c in sorted(zip((int(t) for t in times), commits, strict=True))]


def _areas_text(changes: list[str], code: tuple[str, ...]) -> str:
    """The changed areas in the order of ``AREAS``, as 'training, data or models'."""
    touched = {area for change in changes for area in change.split(", ") if area}
    names = [a for p, a in AREAS.items() if p in code and a in touched]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def note(root: Path, figure: str, **where: str) -> str:
    """'measured at X', or that the rows record no commit, and what changed after it: the
    clause that the report writes beside ``figure`` (``where``: what ``Figure.rows`` names)."""
    spec = FIGURES[figure]
    path = root / RESULTS / spec.rows.format(**where)
    recorded = [c for c in dict.fromkeys(r.get("commit", "") for r in read_csv(path)) if c]
    head = _head(root)
    if head is None:
        said = _measured_at(recorded) if recorded else "commit not recorded"
        return f"{said}; not checked against the code (no git history)"
    if recorded:
        commits = _ordered(root, recorded)
        said = _measured_at(commits)
    else:
        committed = _committed_at(root, head, path)
        if committed is None:
            return "commit not recorded; not checked against the code (not committed)"
        commits, said = [committed], f"commit not recorded, rows committed at {committed}"
    return said + _changes_text(root, head, commits, spec.code)


def _measured_at(commits: list[str]) -> str:
    if len(commits) == 1:
        return f"measured at {commits[0]}"
    return f"measured at {commits[0]} to {commits[-1]} ({len(commits)} commits)"


def _changes_text(root: Path, head: str, commits: list[str], code: tuple[str, ...]) -> str:
    """', before later changes to …: re-measure', or that the code is unchanged since.

    Neither a count nor which areas changed: the clause then changes once, when the first
    later change lands, instead of with every commit (each would otherwise need the report
    regenerated)."""
    changes = {c: _later_changes(root, head, c, code) for c in commits}
    unknown = [c for c, found in changes.items() if found is None]
    if len(unknown) == len(commits):
        return f"; not checked against the code ({', '.join(unknown)} not in this history)"
    missing = f" ({', '.join(unknown)} not in this history)" if unknown else ""
    areas = _areas_text(list(AREAS.values()), code)
    if not any(found for found in changes.values() if found is not None):
        return f", {areas.replace(' or ', ' and ')} unchanged since{missing}"
    return f", before later changes to {areas}: re-measure{missing}"
