"""The command line is generated from ``config.schema``: flags default to "not given", and the
help shows the schema's one default."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
import typer
from conftest import invoke

from medgraft.cli import app, typed_options
from medgraft.config.schema import (
    HELP_SECTIONS,
    DemoOptions,
    EvaluateOptions,
    ExportOptions,
    FetchOptions,
    PredictOptions,
    StudyOptions,
    TrainConfig,
    option,
)

SCHEMAS = {
    "train": TrainConfig,
    "predict": PredictOptions,
    "evaluate": EvaluateOptions,
    "study": StudyOptions,
    "demo": DemoOptions,
    "export": ExportOptions,
}

COMMANDS = [*sorted(SCHEMAS), "crossval", "compare", "encoders", "recipes", "fetch-weights"]
SECTION_TITLES = [section.capitalize() for section in HELP_SECTIONS]


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
    assert typed_options({"epochs": None, "lr": 0.5, "augment__strength": 0.25}) == {
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

    monkeypatch.setattr("medgraft.training.trainer.run_training", fake_train)
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 20\nbatch_size: 16\naugment: {strength: 0.5}\n")
    args = ["train", "--recipe", "none", "--data", "d", "--output", "o", "--config", config]
    assert invoke(runner, *args, "--epochs", "8", "--no-flips").exit_code == 0
    assert (seen[0].epochs, seen[0].batch_size) == (8, 16)
    assert (seen[0].augment.strength, seen[0].augment.flips) == (0.5, False)


def test_train_ends_by_naming_the_file_predict_will_use(runner, tmp_path, monkeypatch) -> None:
    fields = {"best_dice": 0.5, "best_epoch": 2, "run_dir": tmp_path / "run", "seconds": 3}
    monkeypatch.setattr(
        "medgraft.training.trainer.run_training", lambda config: type("R", (), fields)
    )
    result = invoke(
        runner, "train", "--recipe", "none", "--data", "d", "--output", tmp_path / "run"
    )
    assert result.exit_code == 0, result.output
    assert f"predict --model {tmp_path / 'run'} uses {tmp_path / 'run' / 'last.pt'}" in (
        result.output.replace("\n", "")
    )


def help_at_80_columns(runner, name: str) -> str:
    result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.output


def listed_sections(help_text: str) -> dict[str, list[str]]:
    """The option names under each heading of a ``--help`` page, in order (names only: the
    start of an entry's first line, never its wrapped help text)."""
    sections: dict[str, list[str]] = {}
    for line in help_text.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            sections[line[:-1]] = []
        elif sections and line.startswith("  -"):
            names = line.strip().split("  ")[0]
            sections[list(sections)[-1]] += re.findall(r"(?<![\w-])--?\w[\w-]*", names)
    return sections


def schema_sections(cls: type) -> dict[str, str]:
    """Each flag the CLI makes of an options dataclass, and the help section its field names."""
    hints = typing.get_type_hints(cls)
    found = {}
    for f in fields(cls):
        if f.metadata.get("cli", True) is False:
            continue
        if is_dataclass(hints[f.name]):
            nested = [g for g in fields(hints[f.name]) if "flag" in g.metadata]
            found |= {f"--{g.metadata['flag']}": g.metadata["section"] for g in nested}
        else:
            flag = "--" + f.metadata.get("flag", f.name.replace("_", "-"))
            found[flag] = f.metadata["section"]
    return found


@pytest.mark.parametrize("name", COMMANDS)
def test_help_shows_every_option_name_in_full_at_80_columns(name: str, runner) -> None:
    output = help_at_80_columns(runner, name)
    click_command = typer.main.get_command(app).commands[name]
    names = [n for p in click_command.params for n in [*p.opts, *p.secondary_opts]]
    assert "--help" in output
    missing = [n for n in names if n.startswith("-") and n not in output]
    assert not missing, missing
    assert all(len(line) <= 80 for line in output.splitlines())
    assert "…" not in output


@pytest.mark.parametrize("name", COMMANDS)
def test_help_lists_each_option_once_in_sections_in_order_with_help_last(name: str, runner) -> None:
    sections = listed_sections(help_at_80_columns(runner, name))
    headings = [heading for heading in sections if heading != "Arguments"]
    assert headings[:-1] == [title for title in SECTION_TITLES if title in headings]
    assert headings[-1] == "Help" and sections["Help"] == ["--help"]
    click_command = typer.main.get_command(app).commands[name]
    options = [n for p in click_command.params for n in [*p.opts, *p.secondary_opts]]
    listed = [n for names in sections.values() for n in names]
    assert sorted(listed) == sorted([n for n in options if n.startswith("-")] + ["--help"])


def test_train_help_has_every_section_in_order(runner) -> None:
    sections = listed_sections(help_at_80_columns(runner, "train"))
    assert list(sections) == [
        "Run",
        "Data",
        "Model and weights",
        "Optimisation",
        "Augmentation",
        "Validation and output",
        "Compute",
        "Help",
    ]


@pytest.mark.parametrize(("name", "schema"), [*SCHEMAS.items(), ("fetch-weights", FetchOptions)])
def test_help_lists_each_option_under_the_section_the_schema_names(
    name: str, schema: type, runner
) -> None:
    heading_of = {
        flag: heading
        for heading, names in listed_sections(help_at_80_columns(runner, name)).items()
        for flag in names
    }
    expected = schema_sections(schema)
    if name == "train":  # the CLI's own parameters
        expected |= {"--recipe": "run", "--config": "run", "--fold": "validation and output"}
    assert {flag: heading_of.get(flag) for flag in expected} == {
        flag: section.capitalize() for flag, section in expected.items()
    }


def test_an_unknown_help_section_is_refused_where_the_option_is_declared() -> None:
    with pytest.raises(ValueError, match="optimization"):
        option(0, "Typo in the section.", section="optimization")


@pytest.mark.slow
def test_a_normal_run_prints_no_library_notices_and_verbose_shows_them(
    mri_run, demo_dir, tmp_path
) -> None:
    scan = next((demo_dir / "imagesTs").glob("*.nii.gz"))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / scan.name).write_bytes(scan.read_bytes())

    def predict(*extra: str) -> str:
        out = tmp_path / f"out{len(extra)}"
        command = [sys.executable, "-m", "medgraft", *extra, "predict", "--model", str(mri_run)]
        command += ["-i", str(tmp_path / "in"), "-o", str(out)]
        done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300)
        return done.stderr

    quiet = predict()
    for notice in ("nvImageCodec", "FutureWarning", "UserWarning", "Orientationd"):
        assert notice not in quiet, quiet
    assert "nvImageCodec" in predict("--verbose")


def test_an_unknown_output_format_is_one_line_before_any_work(runner, tmp_path) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "a.png").write_bytes(b"")  # never read: the option is checked first
    result = invoke(
        runner, "predict", "--model", tmp_path / "none.pt", "-i", scans, "-o", tmp_path / "out",
        "--output-format", "dicom",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "unknown mask writer --output-format 'dicom'; choose from nifti, dicom-seg" in str(
        result.exception
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("command", "flag", "valid"),
    [
        ("train", "--schedule", "poly, cosine"),
        ("train", "--loss", "dice_ce, dice_ce_batch, dice_focal"),
        ("train", "--amp", "auto, off, fp16, bf16"),
        ("predict", "--output-format", "nifti, dicom-seg, both, probabilities"),
    ],
)
def test_a_bad_choice_fails_while_parsing_before_data_or_torch(
    command: str, flag: str, valid: str, tmp_path: Path
) -> None:
    """One line naming the valid values, exit 1, and neither the (missing) data nor torch
    touched: the names come from light registries."""
    where = ["--data", tmp_path / "absent", "--output", tmp_path / "run"]
    if command == "predict":
        where = ["--model", tmp_path / "absent.pt", "-i", tmp_path / "absent", "-o", tmp_path]
    probe = (
        "import sys\nfrom medgraft.cli import main\n"
        f"sys.argv = ['medgraft', {command!r}, *{[str(w) for w in where]!r}, {flag!r}, 'nope']\n"
        "try:\n    main()\nexcept SystemExit as exit:\n"
        "    print('torch' in sys.modules, exit.code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.stdout.split() == ["False", "1"], done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "'nope'" in line and valid in line, line
    assert not (tmp_path / "run").exists()
