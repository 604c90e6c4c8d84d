"""The command line is generated from ``config.schema``: flags default to "not given", and the
help shows the schema's one default."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest
from conftest import invoke

from medgraft.cli import app, given
from medgraft.config.schema import (
    DemoOptions,
    EvaluateOptions,
    PredictOptions,
    StudyOptions,
    TrainConfig,
)

SCHEMAS = {
    "train": TrainConfig,
    "predict": PredictOptions,
    "evaluate": EvaluateOptions,
    "study": StudyOptions,
    "demo": DemoOptions,
}


def command(name: str):
    return next(c.callback for c in app.registered_commands if c.callback.__name__ == name)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_schema_option_is_a_flag_that_defaults_to_not_given(name: str) -> None:
    parameters = inspect.signature(command(name)).parameters
    for f in fields(SCHEMAS[name]):
        if f.metadata.get("cli", True) is False:
            # the CLI spells these its own way: --fold also takes 'all', --recipe a name or file
            assert f.name in ("fold", "recipe") or f.name not in parameters
        elif f.type not in ("AugmentOptions", "InferenceOptions"):
            assert parameters[f.name].default is None, f.name
    own = [p for p in parameters.values() if p.name not in {f.name for f in fields(SCHEMAS[name])}]
    assert all(p.default in (None, False, inspect.Parameter.empty) for p in own), own


def test_nested_flags_and_help_show_the_schema_defaults(runner) -> None:
    parameters = inspect.signature(command("train")).parameters
    assert {"augment__enabled", "augment__strength", "augment__flips"} <= set(parameters)
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    assert "[default: 8]" in result.output  # --epochs, from TrainConfig
    assert "[default: dice_ce]" in result.output
    assert "--augment-strength" in result.output and "--no-flips" in result.output


def test_given_keeps_only_typed_flags_and_nests_them() -> None:
    assert given({"epochs": None, "lr": 0.5, "augment__strength": 0.25}) == {
        "lr": 0.5,
        "augment": {"strength": 0.25},
    }


def test_typed_flag_equal_to_the_default_still_beats_the_config_file(
    runner, tmp_path, monkeypatch
) -> None:
    seen: list[TrainConfig] = []

    def fake_train(config: TrainConfig):
        seen.append(config)
        fields = {"best_dice": 0.0, "best_epoch": 0, "run_dir": tmp_path, "seconds": 0}
        return type("Result", (), fields)

    monkeypatch.setattr("medgraft.training.trainer.train", fake_train)
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 20\nbatch_size: 16\naugment: {strength: 0.5}\n")
    args = ["train", "--data", "d", "--output", "o", "--config", config]
    assert invoke(runner, *args, "--epochs", "8", "--no-flips").exit_code == 0
    assert (seen[0].epochs, seen[0].batch_size) == (8, 16)
    assert (seen[0].augment.strength, seen[0].augment.flips) == (0.5, False)
