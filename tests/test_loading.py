"""Config files: validation, precedence of the option layers, and an exact save/load round trip.

Most tests use a small stand-in dataclass so they run without importing torch; one test
round-trips the real ``TrainConfig``, whatever fields it has by now.
"""

from __future__ import annotations

import json
import os
import re
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path

import pytest

from medgraft.cli import typed_options
from medgraft.config.loading import (
    load_config_file,
    load_saved_config,
    options_sha256,
    resolve_options,
    save_config,
)
from medgraft.config.schema import AugmentOptions, TrainConfig
from medgraft.errors import MedgraftError


@dataclass
class Model:
    max_depth: int = 4
    dropout: float = 0.0


@dataclass
class Options:
    data: str
    epochs: int = 8
    batch_size: int = 32
    lr: float = 2e-3
    offline: bool = False
    cache_dir: str | None = None
    augment: dict = field(default_factory=lambda: {"flips": False})
    model: Model = field(default_factory=Model)


def write(tmp_path: Path, text: str, name: str = "train.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(path: Path) -> dict:
    return load_config_file(path, config_class=Options)


def _changed(value: object, hint: object = None) -> object:
    """A value of the same kind that differs from ``value`` (``hint``: the field's type)."""
    if is_dataclass(value):
        hints = typing.get_type_hints(type(value))
        return replace(
            value,
            **{f.name: _changed(getattr(value, f.name), hints[f.name]) for f in fields(value)},
        )
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 3
    if isinstance(value, float):
        return value / 2 + 0.125
    if isinstance(value, str):
        return value + "-x"
    if isinstance(value, dict):
        return {**value, "extra": [1, 2], "nested": {"yes": "no"}}
    if value is None and bool in typing.get_args(hint):
        return True  # an option left to be decided ("not given")
    return "some/folder"  # None: the optional paths


def test_train_config_round_trips_with_every_field_changed(tmp_path: Path) -> None:
    values = {}
    for f in fields(TrainConfig):
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        values[f.name] = "some/folder" if default is MISSING else _changed(default, f.type)
    values["slice_axis"] = "sagittal"  # one of a few names: checked when the config is built
    values["views"] = "coronal,axial"
    values["dims"], values["conversion"] = 3, "inflate"  # 2 or 3; a registered conversion
    original = TrainConfig(**values)
    path = tmp_path / "config.yaml"
    save_config(original, path)
    assert TrainConfig(**load_saved_config(path)) == original
    saved_keys = [line.split(":")[0] for line in path.read_text().splitlines() if line[0] != " "]
    assert saved_keys == [f.name for f in fields(TrainConfig)]  # field order, not sorted


def test_round_trip_keeps_tricky_scalars_and_nested_dataclasses(tmp_path: Path) -> None:
    original = Options(
        data="yes",  # YAML 1.1 would read a bare yes as true
        lr=1e-10,
        cache_dir="null",
        augment={"on": "1e-3", "rotate": 15.5, "list": [1, 2.5, None]},
        model=Model(max_depth=7, dropout=0.25),
    )
    path = tmp_path / "config.yaml"
    save_config(original, path)
    assert Options(**load_saved_config(path, config_class=Options)) == original


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "config.yaml"
    save_config(Options(data="a"), path)
    before = path.read_text()

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_config(Options(data="b", epochs=99), path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_precedence_defaults_then_file_then_typed_flags(tmp_path: Path) -> None:
    file_values = load(write(tmp_path, "epochs: 20\nbatch_size: 16\nlr: 0.01\n"))
    # what the CLI passes on: only flags that were typed; a flag left out is None ("not given")
    flags = typed_options(
        {
            "data": Path("/data/set"),
            "epochs": 8,  # equal to the default, but typed: must beat the file's 20
            "batch_size": None,  # not typed: must not undo the file's 16
            "lr": 0.5,  # typed
            "cache_dir": None,  # not typed, not in the file: the dataclass default stays
        }
    )
    merged = resolve_options([file_values, flags], config_class=Options)
    assert Options(**merged) == Options(data="/data/set", epochs=8, batch_size=16, lr=0.5)


def test_layers_merge_nested_options_key_by_key() -> None:
    recipe = {"augment": {"strength": 0.5, "flips": False}, "epochs": 10}
    config_file = {"augment": {"elastic": True}}
    flags = typed_options({"augment__enabled": False, "epochs": None})
    required = {"data": "d", "output": "o"}
    config = TrainConfig(**resolve_options([recipe, config_file, required, flags]))
    assert config.epochs == 10
    assert (config.augment.strength, config.augment.flips) == (0.5, False)
    assert config.augment.elastic and not config.augment.enabled
    assert config.augment.noise  # the schema's default fills what no layer set


def test_merge_builds_nested_dataclasses_and_requires_required_fields(tmp_path: Path) -> None:
    file_values = load(write(tmp_path, "data: d\nmodel: {max_depth: 5}\n"))
    merged = resolve_options([file_values], config_class=Options)
    assert merged["model"] == Model(max_depth=5)
    with pytest.raises(MedgraftError, match="--data"):
        resolve_options([{"epochs": 3}], config_class=Options)


def test_dashed_keys_json_and_widened_floats(tmp_path: Path) -> None:
    text = "batch-size: 16\nlr: 1e-3\nmodel:\n  max-depth: 5\n  dropout: 1\ncache-dir: null\n"
    assert load(write(tmp_path, text)) == {
        "batch_size": 16,
        "lr": 0.001,  # YAML 1.1 reads 1e-3 as text
        "model": {"max_depth": 5, "dropout": 1.0},  # kept as a dict
        "cache_dir": None,
    }
    as_json = json.dumps({"epochs": 3, "lr": 1, "augment": {"flips": True}})
    loaded = load(write(tmp_path, as_json, "train.json"))
    assert loaded == {"epochs": 3, "lr": 1.0, "augment": {"flips": True}}
    assert type(loaded["lr"]) is float
    assert load(write(tmp_path, "# nothing set yet\n")) == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("epochs: [1\n", "invalid YAML at line 2"),
        ("- epochs\n", "top level must be a mapping"),
        ("batchsize: 4\n", "unknown option 'batchsize' (did you mean batch_size?)"),
        (
            "model:\n  max_deph: 4\n",
            "unknown option 'model.max_deph' (did you mean model.max_depth",
        ),
        ("model: 3\n", "option 'model' must be a mapping"),
        ("batch-size: 4\nbatch_size: 4\n", "option 'batch_size' is set twice"),
        ("epochs: eight\n", "option 'epochs' must be int, got str 'eight'"),
        ("epochs: true\n", "option 'epochs' must be int, got bool"),
        ("epochs: 2.5\n", "option 'epochs' must be int, got float"),
        ("offline: 1\n", "option 'offline' must be bool, got int"),
        ("lr: fast\n", "option 'lr' must be float, got str"),
        ("cache_dir: 3\n", "option 'cache_dir' must be str or null, got int"),
        ("augment: [flips]\n", "option 'augment' must be a mapping, got list"),
    ],
)
def test_errors_are_one_line_naming_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(MedgraftError) as caught:
        load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(MedgraftError, match=re.escape(f"config file not found: {path}")):
        load(path)


def test_unsupported_field_type_is_a_programming_error(tmp_path: Path) -> None:
    @dataclass
    class Odd:
        sizes: tuple = (1, 2)

    with pytest.raises(TypeError, match="tuple"):
        load_config_file(write(tmp_path, "{}\n"), config_class=Odd)


def test_options_fingerprint_ignores_where_and_on_what_a_run_is_written() -> None:
    base = TrainConfig(data="d", output="o")
    same = TrainConfig(data="d", output="elsewhere", device="cpu", resume=True, num_workers=2)
    assert options_sha256(base) == options_sha256(same)
    assert options_sha256(base) != options_sha256(TrainConfig(data="d", output="o", lr=0.01))
    nested = TrainConfig(data="d", output="o", augment=AugmentOptions(strength=0.5))
    assert options_sha256(base) != options_sha256(nested)
