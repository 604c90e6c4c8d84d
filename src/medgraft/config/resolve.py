"""The options of one command, from every place they can come from, in order of precedence.

schema defaults < ``--recipe`` (its ``train`` options, then its ``cuda`` profile when training
on a CUDA device) < ``--config`` file < flags typed on the command line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from medgraft.config.loading import (
    load_config_file,
    load_saved_config,
    overlay_options,
    resolve_options,
)
from medgraft.config.recipes import load_recipe, recipe_names
from medgraft.config.schema import TrainConfig
from medgraft.errors import MedgraftError


def train_configs(
    flags: dict[str, Any],
    *,
    recipe: str | None = None,
    config_file: Path | None = None,
    fold: str | None = None,
    on_cuda: Callable[[str], bool] | None = None,
    recipe_chosen: str | None = None,
) -> list[TrainConfig]:
    """One ``TrainConfig`` per fold to train: a single one, or each fold for ``fold='all'``;
    with ``views``, one per fold and view, each view a run of its own in ``<output>/<view>``.

    ``flags`` holds only the options the user typed (nested ones as ``{"augment": {...}}``).
    ``on_cuda`` says whether a ``--device`` value trains on a CUDA GPU: then the recipe's
    ``cuda`` profile applies over its ``train`` options (a resumed run keeps the profile it
    started with). Without it (the lab's fingerprints, any caller that does not look at the
    hardware) the recipe trains as on the CPU. ``recipe_chosen`` records why the caller chose
    the recipe (or none), when the user did not name one.
    """
    asked = [load_config_file(config_file), flags] if config_file else [flags]
    # what naming a recipe asks of a resumed run: its name, not its options (a run started
    # under the cuda profile resumes with the options it saved, on any device)
    named: list[dict[str, Any]] = []
    layers = list(asked)
    if recipe:
        chosen = load_recipe(recipe)
        named = [{"recipe": chosen.name}]
        layers.insert(0, {**chosen.train, **named[0]})
        given = overlay_options(layers)
        device = given.get("device", TrainConfig.device)
        if chosen.cuda and on_cuda and not given.get("resume") and on_cuda(device):
            layers.insert(1, {**chosen.cuda, "recipe_profile": "cuda"})
    if recipe_chosen:
        layers.insert(0, {"recipe_chosen": recipe_chosen})
    base = TrainConfig(**resolve_options(layers))
    folds = [base.fold] if fold is None else folds_to_run(fold, base.folds)
    configs = [replace(base, fold=index) for index in folds]
    if base.view_list:
        if "slice_axis" in flags:
            raise MedgraftError(
                f"views {base.views!r} (from --views, the recipe or --config) trains each view "
                f"it lists: leave out --slice-axis, or for one view pass --views "
                f"{flags['slice_axis']}"
            )
        several = len(base.view_list) > 1  # one view is a plain run in that view
        configs = [
            replace(
                config,
                slice_axis=view,
                output=str(Path(config.output) / view) if several else config.output,
            )
            for config in configs
            for view in base.view_list
        ]
    if base.resume:
        requested = overlay_options([*named, *asked])
        began = [(run_folder(c) / "config.yaml").is_file() for c in configs]
        if not any(began):  # nothing to continue: the trainer reports the missing last.pt
            return [resumed_config(c, requested) for c in configs]
        # several runs (folds, views) continue where the set stopped: the ones never started
        # start now, with the options of one that did
        template = run_folder(configs[began.index(True)]) / "config.yaml"
        return [
            resumed_config(c, requested) if b else unstarted_config(c, requested, template)
            for c, b in zip(configs, began, strict=True)
        ]
    return configs


def saved_recipe(output: Path) -> str | None:
    """The recipe a run (or set of folds and views) in ``output`` was started with, for
    ``--resume`` without ``--recipe``: its name when it is a shipped recipe, else None (a
    recipe file must be named again, a run without a recipe has none)."""
    saved = [output / "config.yaml", *output.glob("*/config.yaml"), *output.glob("*/*/config.yaml")]
    for path in saved:
        if path.is_file():
            name = load_config_file(path).get("recipe")
            return name if name in recipe_names() else None
    return None


def unstarted_config(config: TrainConfig, requested: dict[str, Any], template: Path) -> TrainConfig:
    """A run of a resumed set that never started: the saved options of a run that did
    (``template``), in this run's own view, fold and folder."""
    sibling = resumed_config(config, requested, template)
    return replace(
        sibling, slice_axis=config.slice_axis, fold=config.fold, output=config.output, resume=False
    )


def run_folder(config: TrainConfig) -> Path:
    """Where a run writes its checkpoints: ``--output``, or its ``fold_N`` for ``--folds``."""
    root = Path(config.output)
    return root / f"fold_{config.fold}" if config.folds and not config.split_file else root


RESUME_MAY_CHANGE = {
    "data", "output", "resume", "epochs", "device", "num_workers", "cache_dir", "views"
}  # fmt: skip
"""What ``--resume`` may set anew: where things are, the hardware, how long to train, and
which other views' runs sit beside a run (a view's run trained alone joins a ``--views`` set)."""


def resumed_config(
    config: TrainConfig, requested: dict[str, Any], saved_file: Path | None = None
) -> TrainConfig:
    """The run's saved options (its ``config.yaml``, or ``saved_file``), with the epochs
    raised when given.

    Any other given option that differs from the saved run is refused: a resumed run must be
    the run it continues. Without a saved config the trainer reports the missing ``last.pt``.
    """
    saved_file = saved_file or run_folder(config) / "config.yaml"
    if not saved_file.is_file():
        return config
    saved = resolve_options([load_saved_config(saved_file)])
    saved_plain, current = asdict(TrainConfig(**saved)), asdict(config)
    for name in sorted(set(requested) - RESUME_MAY_CHANGE):
        if current[name] != saved_plain[name]:
            raise MedgraftError(
                f"{saved_file}: --resume continues the run as it was started, but {name} "
                f"differs (saved {saved_plain[name]!r}, given {current[name]!r}); start a new "
                "run from this one instead (--init-from RUN --init-part all)"
            )
    return resumed_options(saved, config, new_epochs="epochs" in requested)


def resumed_options(
    saved: dict[str, Any], current: TrainConfig, *, new_epochs: bool
) -> TrainConfig:
    """The options a resumed run continues with: the saved run's (``saved``, as
    :func:`~medgraft.config.loading.resolve_options` returns them) with what ``--resume`` may set
    anew (``RESUME_MAY_CHANGE``) taken from ``current``, the epochs only when ``new_epochs``."""
    changeable = {k: getattr(current, k) for k in RESUME_MAY_CHANGE if new_epochs or k != "epochs"}
    return TrainConfig(**{**saved, **changeable, "fold": current.fold})


def folds_to_run(fold: str, folds: int) -> list[int]:
    """``--fold`` as a list of fold indices: one number, or every fold of ``--folds K``."""
    if fold == "all":
        if not folds:
            raise MedgraftError("--fold all needs --folds K")
        return list(range(folds))
    try:
        return [int(fold)]
    except ValueError as exc:
        raise MedgraftError(f"--fold must be a number or 'all', not '{fold}'") from exc
