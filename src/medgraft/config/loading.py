"""Options from recipes, YAML/JSON files and typed flags, merged, checked and saved.

Everything is driven by the fields of an options dataclass of ``config.schema``
(``TrainConfig`` unless a caller passes another), so new options need no change here.
Precedence is the schema's defaults < recipe < config file < flags the user typed: the CLI
passes only flags that were given (its parameters default to "not given"), so a flag can never
undo a file by accident, and a typed flag wins even when it equals the default. Options whose
type is a dataclass (``augment``, ``inference``) merge key by key across these layers.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import reprlib
import types
import typing
from dataclasses import MISSING, asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from medgraft.config.schema import TrainConfig
from medgraft.errors import MedgraftError, first_line
from medgraft.files import atomic_write_text


def load_config_file(path: Path, *, config_class: type = TrainConfig) -> dict[str, Any]:
    """Validated options from a YAML (or JSON) file, keyed by field name.

    Dashed keys (``batch-size``) are accepted as the CLI spells them. Values of dict- or
    dataclass-typed fields stay dicts; float fields also take ints and numeric text.
    """
    data = read_yaml(path)
    if data is None:  # empty, or only comments: no options, not an error
        return {}
    return options_from_mapping(data, path, config_class=config_class)


def read_yaml(path: Path) -> object:
    """The parsed content of a YAML (or JSON) file; unreadable or invalid files name themselves."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MedgraftError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MedgraftError(f"cannot read config file {path}: {first_line(exc)}") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise MedgraftError(f"{path}: invalid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise MedgraftError(f"{path}: invalid YAML: {first_line(exc)}") from None


def options_from_mapping(
    data: object, path: Path, *, config_class: type = TrainConfig, prefix: str = ""
) -> dict[str, Any]:
    """``data`` checked against the config class's fields and types (errors name ``path``)."""
    return _checked(data, config_class, Path(path), prefix=prefix)


def resolve_options(layers: list[dict[str, Any]], *, config_class: type = TrainConfig) -> dict:
    """Keyword arguments for ``config_class``: its defaults overlaid by each layer in turn.

    A layer holds only options that were given (names are field names, values as validated by
    :func:`options_from_mapping`; paths may be ``PathLike`` and are stored as strings). Values of
    dataclass-typed fields are merged key by key; any other value replaces the one before.
    """
    merged = overlay_options(layers, config_class=config_class)
    missing = [
        f"--{f.name.replace('_', '-')}"
        for f in fields(config_class)
        if f.name not in merged and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise MedgraftError(
            f"missing required option(s) {', '.join(missing)}: "
            "give them on the command line or in the config file"
        )
    return _with_dataclasses(config_class, merged)


def overlay_options(
    layers: list[dict[str, Any]], *, config_class: type = TrainConfig
) -> dict[str, Any]:
    """The layers merged in order, as plain values: dataclass-typed options key by key."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _overlay(merged, layer, config_class)
    return merged


def _overlay(base: dict[str, Any], layer: dict[str, Any], cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    result = dict(base)
    for name, value in layer.items():
        if is_dataclass(hints.get(name)) and isinstance(value, dict):
            result[name] = _overlay(result.get(name) or {}, value, hints[name])
        else:
            result[name] = os.fspath(value) if isinstance(value, os.PathLike) else value
    return result


NOT_IN_OPTIONS_HASH = frozenset(
    {"output", "resume", "overwrite", "device", "num_workers", "cache_dir", "offline", "views"}
    | {"tracker", "recipe_chosen"}
)
"""Where a run is written and tracked, on what hardware, whether it may download, why its
recipe was chosen: not what it computes. ``views`` only says which single-view runs exist beside
it (each records its ``slice_axis``), so a view's run trained on its own is the same run as that
view of a ``--views`` set."""


ADDED_LATER = {
    "labels_dir": None,
    "roi_dir": None,
    "slice_axis": "axial",
    "deep_supervision": 0,
    "patch_size": 0,
    "trainer": "default",
    "val_metrics": None,
    "cpu_budget_minutes": None,
    "dims": 2,
    "conversion": "acs",
    "volume_patch": "auto",
    "val_every": 1,
    "recipe_profile": None,
}
"""Options added after runs were fingerprinted, with the value that reproduces what those runs
did: at that value an option is left out of the fingerprint, so adding it does not make every
earlier run look changed."""


def options_sha256(config: TrainConfig) -> str:
    """A fingerprint of the options that decide what a run computes: a finished run is reused
    only when the options asked for now have the same one."""
    values = {
        k: v
        for k, v in asdict(config).items()
        if k not in NOT_IN_OPTIONS_HASH and not (k in ADDED_LATER and v == ADDED_LATER[k])
    }
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def save_config(config: Any, path: Path) -> None:
    """Write an options dataclass as YAML in field order, atomically.

    Field order mirrors the dataclass, so the file reads like the documentation; the atomic
    write means a crash never leaves a half-written config for ``--resume`` or a colleague.
    """
    text = yaml.safe_dump(asdict(config), sort_keys=False, allow_unicode=True)
    atomic_write_text(Path(path), text)


def load_saved_config(path: Path, *, config_class: type = TrainConfig) -> dict[str, Any]:
    """Keyword arguments that rebuild exactly the config :func:`save_config` wrote."""
    cls = config_class
    return _with_dataclasses(cls, load_config_file(path, config_class=cls))


def _checked(data: object, cls: type, path: Path, prefix: str) -> dict[str, Any]:
    """``data`` with dashed keys normalised, after checking names and types against ``cls``."""
    if not isinstance(data, dict):
        where = f"option '{prefix[:-1]}'" if prefix else "the top level"
        raise MedgraftError(
            f"{path}: {where} must be a mapping of option: value, got {_type_name(type(data))}"
        )
    hints = typing.get_type_hints(cls)
    # Resolved for every field up front, so an unsupported annotation fails on any load.
    allowed = {name: _allowed(hint) for name, hint in hints.items()}
    names = [f.name for f in fields(cls)]
    result: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in names:
            close = [prefix + c for c in difflib.get_close_matches(name, names, n=3)]
            suggestion = f" (did you mean {', '.join(close)}?)" if close else ""
            raise MedgraftError(f"{path}: unknown option '{prefix}{key}'{suggestion}")
        if name in result:
            raise MedgraftError(f"{path}: option '{prefix}{name}' is set twice")
        if is_dataclass(hints[name]) and isinstance(value, dict):
            result[name] = _checked(value, hints[name], path, prefix=f"{prefix}{name}.")
        else:
            result[name] = _typed(value, allowed[name], f"{prefix}{name}", path)
    return result


def _typed(value: object, allowed: tuple[type, ...], label: str, path: Path) -> object:
    """``value`` if its type is allowed; ints and numeric text are widened for float fields."""
    if float in allowed and type(value) in (int, str) and type(value) not in allowed:
        # YAML 1.1 reads 1e-3 (no dot) as text, and JSON writes whole floats as ints.
        try:
            return float(value)
        except ValueError:
            pass
    if type(value) not in allowed:  # exact: bool is an int subclass but not an int here
        expected = " or ".join(_type_name(t) for t in allowed)
        raise MedgraftError(
            f"{path}: option '{label}' must be {expected}, "
            f"got {_type_name(type(value))} {reprlib.repr(value)}"
        )
    return value


def _allowed(hint: Any) -> tuple[type, ...]:
    """The Python types a YAML value may have for a field annotated ``hint``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(t for arm in typing.get_args(hint) for t in _allowed(arm))
    if hint in (bool, int, float, str, type(None)):
        return (hint,)
    if hint is dict or typing.get_origin(hint) is dict or is_dataclass(hint):
        return (dict,)
    raise TypeError(f"config files cannot hold a field of type {hint!r}; add it to _allowed")


def _with_dataclasses(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Mappings of dataclass-typed fields rebuilt as those dataclasses, at every depth."""
    hints = typing.get_type_hints(cls)
    return {
        name: hints[name](**_with_dataclasses(hints[name], value))
        if is_dataclass(hints[name]) and isinstance(value, dict)
        else value
        for name, value in values.items()
    }


def _type_name(kind: type) -> str:
    return {dict: "a mapping", type(None): "null"}.get(kind, kind.__name__)
