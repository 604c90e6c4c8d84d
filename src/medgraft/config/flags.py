"""Options written back as the command-line words that give them: a report shows the command
that made it, and a driver runs ``medgraft`` with options it holds as a dict. One renderer, so
the words always parse back to the same options."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import Field, fields, is_dataclass
from typing import Any

from medgraft.config.schema import TrainConfig
from medgraft.errors import MedgraftError


def as_flags(options: Mapping[str, Any], config_class: type = TrainConfig) -> list[str]:
    """``--flag`` (true), ``--no-flag`` (false) or ``--flag value`` for each option, named as
    the CLI names the fields of ``config_class`` (a field's ``flag``, else its name with
    dashes); a section (``{"augment": {"flips": True}}``) by its fields' own flags. Names that
    are not fields (``data`` of ``medgraft study``) are written with dashes."""
    own = {f.name: f for f in fields(config_class)}
    words = []
    for name, value in options.items():
        if isinstance(value, Mapping):
            section = _section_fields(config_class, name)
            for inner, nested in value.items():
                if "flag" not in section[inner].metadata:
                    raise MedgraftError(
                        f"{name}.{inner} has no command-line flag: set it in a --config file"
                    )
                words += _words(section[inner].metadata["flag"], nested)
        else:
            words += _words(_flag_name(own.get(name), name), value)
    return words


def _section_fields(config_class: type, name: str) -> dict[str, Field]:
    hint = typing.get_type_hints(config_class)[name]
    section = next(t for t in typing.get_args(hint) or (hint,) if is_dataclass(t))
    return {f.name: f for f in fields(section)}


def _flag_name(field: Field | None, name: str) -> str:
    return field.metadata.get("flag", name.replace("_", "-")) if field else name.replace("_", "-")


def _words(flag: str, value: object) -> list[str]:
    if isinstance(value, bool):
        return [f"--{flag}" if value else f"--no-{flag}"]
    return [f"--{flag}", str(value)]
