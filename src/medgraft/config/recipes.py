"""Named training recipes: the settings measured to work on a kind of data, shipped as YAML.

A recipe file (``src/medgraft/config/recipes/<name>.yaml``) holds a one-line ``summary``, what
data it is ``for``, the ``train`` options (any ``TrainConfig`` field but the data and output
folders; ``inference`` among them sets what ``medgraft predict`` does by default), optionally a
``cuda`` profile (options that replace ``train``'s when training on a CUDA GPU, sized for its
budget), and ``measured``: the cross-validation result, wall time and hardware behind it.
``medgraft train --recipe NAME`` takes the ``train`` options (with the ``cuda`` profile over them
on a CUDA device) as defaults that a ``--config`` file and typed flags override; a path to a
file of the same form works too, so a copied and edited recipe needs no code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from medgraft.config.loading import options_from_mapping, read_yaml, resolve_options
from medgraft.config.schema import TrainConfig
from medgraft.errors import MedgraftError

RECIPE_KEYS = {"summary", "for", "train", "cuda", "measured"}
NOT_IN_RECIPES = {"data", "output", "resume", "overwrite", "recipe", "recipe_profile"}
NOT_IN_RECIPES |= {"recipe_chosen"}
"""Options that belong to one run, not to a recipe shared between datasets."""
NOT_IN_PROFILES = {"device", "views", "folds", "trainer"}
"""What the ``cuda`` profile may not change: it applies because of the device, and it trains the
same runs (views, folds) with the same trainer as the recipe's ``train`` options."""


@dataclass
class Recipe:
    name: str
    summary: str
    use_for: str
    train: dict[str, Any]
    measured: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    cuda: dict[str, Any] = field(default_factory=dict)
    """Options over ``train``'s when training on a CUDA device (``recipe_profile: cuda``)."""

    def cuda_changes(self) -> list[tuple[str, Any, Any]]:
        """(option, value on the CPU, value under the cuda profile) for each option the
        profile changes, nested ones as ``augment.strength``."""
        where = {"data": "-", "output": "-"}
        cpu = _flat(asdict(TrainConfig(**resolve_options([self.train, where]))))
        gpu = _flat(asdict(TrainConfig(**resolve_options([self.train, self.cuda, where]))))
        return [(name, cpu[name], gpu[name]) for name in cpu if cpu[name] != gpu[name]]


def _flat(options: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in options.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{name}.")
        else:
            flat[prefix + name] = value
    return flat


def recipe_folder() -> Path:
    """Where the shipped recipes live (inside the installed package)."""
    return Path(str(resources.files("medgraft.config") / "recipes"))


def recipe_names() -> list[str]:
    return sorted(p.stem for p in recipe_folder().glob("*.yaml"))


def load_recipe(name_or_path: str) -> Recipe:
    """A shipped recipe by name, or a recipe file by path; unknown names list the known ones."""
    path = Path(name_or_path)
    if not (path.suffix in {".yaml", ".yml"} and path.is_file()):
        path = recipe_folder() / f"{name_or_path}.yaml"
        if not path.is_file():
            raise MedgraftError(
                f"unknown recipe '{name_or_path}'; shipped recipes: {', '.join(recipe_names())} "
                "(or give the path of a recipe .yaml file)"
            )
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise MedgraftError(f"{path}: a recipe must be a mapping with {sorted(RECIPE_KEYS)}")
    unknown = sorted(set(data) - RECIPE_KEYS)
    missing = sorted({"summary", "for", "train"} - set(data))
    if unknown or missing:
        problems = [f"unknown key(s) {unknown}"] * bool(unknown) + [f"missing {missing}"] * bool(
            missing
        )
        raise MedgraftError(f"{path}: {'; '.join(problems)}; a recipe has {sorted(RECIPE_KEYS)}")
    train = options_from_mapping(data["train"] or {}, path, prefix="train.")
    cuda = options_from_mapping(data.get("cuda") or {}, path, prefix="cuda.")
    for section, options in (("train", train), ("cuda", cuda)):
        run_only = sorted(NOT_IN_RECIPES & set(options))
        if run_only:
            raise MedgraftError(f"{path}: {section}.{run_only[0]} is set per run, not in a recipe")
    fixed = sorted(NOT_IN_PROFILES & set(cuda))
    if fixed:
        raise MedgraftError(
            f"{path}: cuda.{fixed[0]} cannot change with the device; set it under train"
        )
    measured = data.get("measured") or {}
    if not isinstance(measured, dict):
        raise MedgraftError(f"{path}: 'measured' must be a mapping")
    return Recipe(
        name=path.stem,
        summary=str(data["summary"]).strip(),
        use_for=str(data["for"]).strip(),
        train=train,
        measured=measured,
        path=path,
        cuda=cuda,
    )
