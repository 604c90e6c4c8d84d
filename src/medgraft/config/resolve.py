"""The options of one command, from every place they can come from, in order of precedence.

schema defaults < ``--recipe`` < ``--config`` file < flags typed on the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medgraft.config.loading import load_config_file, resolve_options
from medgraft.config.recipes import load_recipe
from medgraft.config.schema import TrainConfig
from medgraft.errors import MedgraftError


def train_configs(
    flags: dict[str, Any],
    *,
    recipe: str | None = None,
    config_file: Path | None = None,
    fold: str | None = None,
) -> list[TrainConfig]:
    """One ``TrainConfig`` per fold to train: a single one, or each fold for ``fold='all'``.

    ``flags`` holds only the options the user gave (nested ones as ``{"augment": {...}}``).
    """
    layers: list[dict[str, Any]] = []
    if recipe:
        chosen = load_recipe(recipe)
        layers.append({**chosen.train, "recipe": chosen.name})
    if config_file:
        layers.append(load_config_file(config_file))
    layers.append(flags)
    if fold is None:
        return [TrainConfig(**resolve_options(layers))]
    merged = resolve_options(layers)
    return [TrainConfig(**{**merged, "fold": index}) for index in folds_to_run(fold, merged)]


def folds_to_run(fold: str, options: dict[str, Any]) -> list[int]:
    """``--fold`` as a list of fold indices: one number, or every fold of ``--folds K``."""
    if fold == "all":
        if not options.get("folds"):
            raise MedgraftError("--fold all needs --folds K")
        return list(range(options["folds"]))
    try:
        return [int(fold)]
    except ValueError as exc:
        raise MedgraftError(f"--fold must be a number or 'all', not '{fold}'") from exc
