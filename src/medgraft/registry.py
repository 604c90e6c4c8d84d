"""Named registries: the one place each kind of interchangeable part is added.

A registry maps a name (what a user types: ``--loss dice_ce``, ``--trainer snapshots``) to an
entry. Entries register themselves with the :meth:`Registry.register` decorator where they are
written, as timm's model registry does, or are declared by ``"module:attribute"`` so that listing
the names (the CLI's choices and ``--help``) never imports torch: the module is imported when the
entry is first used. This module imports nothing heavy, so every layer may use it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from medgraft.errors import MedgraftError

T = TypeVar("T")


@dataclass
class _Entry(Generic[T]):
    value: T | None
    reference: str | None
    help: str


class Registry(Generic[T]):
    """Entries of one kind, by name, in the order they were registered."""

    def __init__(self, kind: str, option: str | None = None) -> None:
        self.kind = kind
        """What an entry is, for messages: ``loss``, ``metric``, ``mask writer``."""
        self.option = option
        """The command-line option that chooses among the entries, for messages."""
        self._entries: dict[str, _Entry[T]] = {}

    def register(self, name: str, *, help: str = "") -> Callable[[T], T]:
        """Decorator: make ``name`` choose the decorated object (a later one replaces it)."""

        def add(value: T) -> T:
            self._entries[name] = _Entry(value, None, help or _first_doc_line(value))
            return value

        return add

    def declare(self, name: str, reference: str, *, help: str) -> None:
        """Register ``name`` as ``"package.module:attribute"``, imported on first use."""
        if name not in self._entries:  # an entry registered in code wins over its declaration
            self._entries[name] = _Entry(None, reference, help)

    def remove(self, name: str) -> None:
        """Forget an entry (tests register temporary ones)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        return list(self._entries)

    def help(self, name: str) -> str:
        return self._entries[name].help

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, name: str) -> str:
        """``name`` if registered, else a one-line error listing the valid names."""
        if name not in self._entries:
            option = f"{self.option} " if self.option else ""
            raise MedgraftError(
                f"unknown {self.kind} {option}'{name}'; choose from {', '.join(self.names())}"
            )
        return name

    def get(self, name: str) -> T:
        """The entry called ``name`` (importing its module if it was declared by reference)."""
        entry = self._entries[self.check(name)]
        if entry.value is None and entry.reference is not None:
            module, _, attribute = entry.reference.partition(":")
            entry.value = getattr(importlib.import_module(module), attribute)
        return entry.value  # type: ignore[return-value]

    def items(self) -> list[tuple[str, T]]:
        """Every entry, loaded: for code that iterates them all (the metrics of a table)."""
        return [(name, self.get(name)) for name in self.names()]


def _first_doc_line(value: object) -> str:
    doc = (getattr(value, "__doc__", None) or "").strip()
    return doc.splitlines()[0].rstrip(".") if doc else ""
