"""Atomic writes: a reader sees the old file or the whole new one, and nothing is left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medgraft.files import (
    atomic_write,
    atomic_write_text,
    remove_stale_temporaries,
    sha256_of,
    temporary_name,
)


def test_interrupted_write_leaves_nothing_behind(tmp_path: Path):
    target = tmp_path / "case.nii.gz"

    def crash(tmp: Path) -> None:
        tmp.write_bytes(b"half a mask")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert list(tmp_path.iterdir()) == []


def test_failed_replace_keeps_the_old_file(tmp_path: Path, monkeypatch):
    target = atomic_write_text(tmp_path / "config.yaml", "epochs: 1\n")

    def crash(src, dst) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "epochs: 2\n")
    assert target.read_text() == "epochs: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_temporary_names_are_hidden_keep_the_suffix_and_name_the_writer(tmp_path: Path):
    mask = temporary_name(tmp_path / "case.nii.gz")
    assert mask.name.startswith(".case.nii.gz") and mask.name.endswith(".nii.gz")
    assert str(os.getpid()) in mask.name
    assert temporary_name(tmp_path / "last.pt").suffix == ".pt"


def test_stale_temporaries_are_removed_and_live_writers_kept(tmp_path: Path):
    kept = atomic_write_text(tmp_path / "summary.csv", "a\n")
    in_progress = temporary_name(tmp_path / "b.png")  # this process is alive: a live writer
    in_progress.write_bytes(b"being written")
    stale = in_progress.with_name(in_progress.name.replace(str(os.getpid()), "99999999"))
    stale.write_bytes(b"left by a killed run")
    remove_stale_temporaries(tmp_path)
    assert sorted(tmp_path.iterdir()) == sorted([kept, in_progress])


def test_sha256_matches_a_known_digest(tmp_path: Path):
    path = atomic_write_text(tmp_path / "abc.txt", "abc")
    assert sha256_of(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
