"""Writing files so that a crash or a kill never leaves a half-written one, and hashing them."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
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
