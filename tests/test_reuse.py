"""A finished run stands for the run asked for now only when it was trained with the same
options: reused when its fingerprint matches, refused in one line when it differs, trained
again when ``--redo-changed`` asks for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from medgraft.config.reuse import reuse_finished_run
from medgraft.errors import MedgraftError


def test_a_run_of_the_same_options_is_reused(tmp_path: Path) -> None:
    assert reuse_finished_run(tmp_path, "abc", "abc", redo_changed=False, asked_by="the recipe")
    assert reuse_finished_run(tmp_path, "abc", "abc", redo_changed=True, asked_by="the recipe")


def test_a_run_of_other_options_is_refused_in_one_line_naming_it(tmp_path: Path) -> None:
    run = tmp_path / "fold_0"
    with pytest.raises(MedgraftError) as refused:
        reuse_finished_run(run, "old", "new", redo_changed=False, asked_by="this study")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{run}: ") and "--redo-changed" in message
    assert "this study" in message


@pytest.mark.parametrize("trained_with", ["old", None], ids=["other options", "no fingerprint"])
def test_a_run_of_other_options_is_trained_again_when_asked(
    tmp_path: Path, trained_with: str | None
) -> None:
    assert not reuse_finished_run(
        tmp_path, trained_with, "new", redo_changed=True, asked_by="the recipe"
    )
