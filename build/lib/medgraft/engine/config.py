"""Training options from a YAML/JSON file, merged with CLI flags, and saved for reproduction.

Everything is driven by the fields of the config dataclass (``TrainConfig`` unless a test
passes another), so new options need no change here. Precedence is dataclass defaults <
config file < CLI flags the user actually typed: a flag left at its default must not undo
the file, while a typed flag must win even when it equals the default.
"""

from __future__ import annotations

import difflib
import os
import reprlib
import types
import typing
from dataclasses import MISSING, asdict, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from medgraft.errors import MedgraftError, first_line

if TYPE_CHECKING:
    import typer


def load_config_file(path: Path, *, config_class: type | None = None) -> dict[str, Any]:
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
    data: object, path: Path, *, config_class: type | None = None, prefix: str = ""
) -> dict[str, Any]:
    """``data`` checked against the config class's fields and types (errors name ``path``)."""
    return _checked(data, config_class or _train_config(), Path(path), prefix=prefix)


def merge_config(
    file_values: dict[str, Any],
    cli_values: dict[str, Any],
    explicitly_set: set[str],
    *,
    config_class: type | None = None,
) -> dict[str, Any]:
    """Keyword arguments for the config class: defaults < file < explicitly typed CLI flags.

    Only names in all three of ``explicitly_set``, ``cli_values`` and the fields count: CLI
    parameters that are not fields (``--config``) or that the caller resolves itself (left
    out of ``cli_values``) are ignored. Values replace whole: a dict option from the file is
    not merged key by key with its default. CLI paths are stored as strings, as in the config.
    """
    cls = config_class or _train_config()
    merged: dict[str, Any] = {}
    for f in fields(cls):
        if f.default is not MISSING:
            merged[f.name] = f.default
        elif f.default_factory is not MISSING:
            merged[f.name] = f.default_factory()
    merged.update(file_values)
    names = {f.name for f in fields(cls)}
    for name in explicitly_set & names & cli_values.keys():
        value = cli_values[name]
        merged[name] = os.fspath(value) if isinstance(value, os.PathLike) else value
    missing = [f"--{f.name.replace('_', '-')}" for f in fields(cls) if f.name not in merged]
    if missing:
        raise MedgraftError(
            f"missing required option(s) {', '.join(missing)}: "
            "give them on the command line or in the config file"
        )
    return _with_dataclasses(cls, merged)


def explicit_cli_params(ctx: typer.Context) -> set[str]:
    """Names of the parameters whose value did not come from a default.

    Typed flags, environment variables and prompts count as explicit; a ``default_map``
    entry is a default like any other. Sources are compared by name because recent typer
    (0.29 here) vendors its own click as ``typer._click``, whose ``ParameterSource`` is not
    ``click.core.ParameterSource``; a plain ``click.Context`` works the same way.
    """
    defaulted = {"DEFAULT", "DEFAULT_MAP"}
    return {name for name in ctx.params if ctx.get_parameter_source(name).name not in defaulted}


def save_config(config: Any, path: Path) -> None:
    """Write a config dataclass as YAML in field order, atomically.

    Field order mirrors the dataclass, so the file reads like the documentation; the
    temporary file in the same folder plus ``os.replace`` means a crash never leaves a
    half-written config for ``--resume`` or a colleague to trip on.
    """
    path = Path(path)
    text = yaml.safe_dump(asdict(config), sort_keys=False, allow_unicode=True)
    # Not tempfile.mkstemp: its 0600 mode would survive the rename and hide the file from
    # colleagues; a plain open() honours the umask. The pid keeps concurrent writers apart.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_saved_config(path: Path, *, config_class: type | None = None) -> dict[str, Any]:
    """Keyword arguments that rebuild exactly the config :func:`save_config` wrote."""
    cls = config_class or _train_config()
    return _with_dataclasses(cls, load_config_file(path, config_class=cls))


def _train_config() -> type:
    """``TrainConfig``, imported on use: its module pulls in torch and MONAI."""
    from medgraft.engine.train import TrainConfig

    return TrainConfig


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
