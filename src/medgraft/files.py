"""Writing files so that a crash or a kill never leaves a half-written one (text, CSV), and
hashing them."""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

TEMPORARY_MARK = ".tmp-"
"""Part of every temporary name: ``.<name>.tmp-<pid><suffixes>``, hidden and recognisable."""


def temporary_name(target: Path) -> Path:
    """A hidden name beside ``target`` that keeps its suffixes (writers pick formats by them)
    and the writer's pid (concurrent writers, e.g. torchrun ranks, never share one)."""
    suffixes = "".join(target.suffixes[-2:]) if target.name.endswith(".nii.gz") else target.suffix
    return target.with_name(f".{target.name}{TEMPORARY_MARK}{os.getpid()}{suffixes}")


def atomic_write(target: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write`` on a temporary file beside ``target``, then rename it into place.

    A reader sees the old file or the whole new one, never a part. The temporary file is opened
    by ``write`` itself (not ``tempfile.mkstemp``, whose 0600 mode would survive the rename and
    hide results from colleagues), and it is removed if anything fails.
    """
    target = Path(target)
    tmp = temporary_name(target)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def atomic_write_text(target: Path, text: str) -> Path:
    """``text`` written atomically (UTF-8) and flushed to disk before the rename."""

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    return atomic_write(target, write)


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary files that writers no longer running left in ``folder``.

    A file whose writer still runs (another torchrun rank writing into the same folder) is
    kept: its pid is part of the name.
    """
    for stale in Path(folder).glob(f".*{TEMPORARY_MARK}*"):
        if not _writer_alive(stale.name):
            stale.unlink(missing_ok=True)


def _writer_alive(name: str) -> bool:
    digits = re.match(r"\d+", name.split(TEMPORARY_MARK, 1)[1])
    if digits is None:
        return False
    try:
        os.kill(int(digits.group()), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks (weight files are hundreds of MB)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


CSV_LINE_END = "\r\n"
"""The csv module's own line end (RFC 4180), for new files; an existing file keeps its own."""


def write_csv(
    path: Path,
    rows: Iterable[Mapping[str, object]],
    columns: Sequence[str],
    *,
    line_end: str | None = None,
) -> Path:
    """Every row of ``rows`` under the header ``columns``, written atomically (missing cells
    empty, keys outside ``columns`` left out).

    The one CSV writer of medgraft and its scripts: a crash or a kill leaves the old file or
    the whole new one. ``line_end`` defaults to the existing file's (so rewriting a committed
    CSV changes only the rows that changed), else ``CSV_LINE_END``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line_end = line_end or _line_end_of(path)
    materialised = list(rows)

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(
                handle, fieldnames=list(columns), extrasaction="ignore", lineterminator=line_end
            )
            writer.writeheader()
            writer.writerows(materialised)

    return atomic_write(path, write)


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file as dicts keyed by its header (none when the file is absent)."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def append_csv(
    path: Path, rows: Iterable[Mapping[str, object]], columns: Sequence[str] | None = None
) -> Path:
    """``rows`` added after the rows already in ``path`` (rewritten atomically, so a kill
    never leaves half a row); the header is the file's, or ``columns`` (default: the first
    row's keys) for a new file."""
    kept = read_csv(path)
    new_rows = list(rows)
    if kept:
        header = list(kept[0])
    elif Path(path).exists():  # a header without rows
        with Path(path).open(newline="") as handle:
            header = next(csv.reader(handle), None) or list(columns or new_rows[0])
    else:
        header = list(columns or new_rows[0])
    return write_csv(path, [*kept, *new_rows], header)


def _line_end_of(path: Path) -> str:
    if not path.is_file():
        return CSV_LINE_END
    with path.open("rb") as handle:
        first = handle.readline()
    return "\r\n" if first.endswith(b"\r\n") else "\n" if first.endswith(b"\n") else CSV_LINE_END
