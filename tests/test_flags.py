"""Options rendered as command-line words parse back, through the CLI itself, to the same
options: the words a report shows and the flags a driver passes mean what they were made of."""

from __future__ import annotations

from typing import Any

import pytest
import typer

from medgraft.cli import app, typed_options
from medgraft.config.flags import as_flags
from medgraft.config.schema import StudyOptions
from medgraft.errors import MedgraftError


def parsed(command: str, words: list[str]) -> dict[str, Any]:
    """The options ``medgraft COMMAND WORDS`` receives, as :func:`medgraft.cli.typed_options` nests
    them (parsed only: the command does not run)."""
    click_command = typer.main.get_command(app).commands[command]
    return typed_options(click_command.make_context(command, words).params)


def test_train_options_round_trip_nested_sections_included() -> None:
    options = {
        "data": "cases",
        "output": "run",
        "epochs": 3,
        "lr": 0.0005,
        "offline": True,
        "views": "axial",
        "stray_labels_to_background": False,
        "augment": {"enabled": False, "strength": 0.5, "flips": True},
    }
    words = as_flags(options)
    assert {"--no-augment", "--augment-strength", "--flips", "--no-stray-labels-to-background"} <= (
        set(words)
    )
    assert parsed("train", words) == options


def test_study_options_round_trip_with_the_command_s_own_flags() -> None:
    options = {"data": "cases", "output": "study", "seeds": 2, "fractions": "0.5,1.0"}
    options |= {"redo_changed": True, "offline": False, "quick": True}
    assert parsed("study", as_flags(options, StudyOptions)) == options


def test_a_section_field_without_a_flag_is_refused() -> None:
    with pytest.raises(MedgraftError, match=r"augment\.elastic has no command-line flag"):
        as_flags({"augment": {"elastic": True}})
