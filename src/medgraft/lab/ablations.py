"""The project's ablations as data (``ablations.yaml`` beside this module): each one change to a
shipped recipe, the CV folds it is measured on, and why. Every entry is checked on loading:
its options are the schema's, its recipe a shipped one (its dataset's, or another design such
as ``mri-3d``), its baseline is another entry."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from medgraft.cli import Choice
from medgraft.config.loading import options_from_mapping, read_yaml, resolve_options
from medgraft.config.recipes import load_recipe
from medgraft.config.schema import PredictOptions, TrainConfig
from medgraft.errors import MedgraftError

ABLATIONS_FILE = Path(__file__).with_name("ablations.yaml")
REQUIRED = {"dataset", "recipe", "folds", "change", "summary", "why"}
OPTIONAL = {"baseline", "predict"}


@dataclass(frozen=True)
class Ablation:
    """One change to a recipe, trained and scored on ``folds`` of the recipe's CV split."""

    name: str
    dataset: str
    recipe: str
    folds: list[int]
    change: dict[str, Any]
    """Training options over the recipe's (and the dataset's), as a config file holds them."""
    summary: str
    """What changed, as the ablation table and ``ablations.csv`` say it."""
    why: str
    baseline: str = ""
    """The ablation it is paired with when measured against an earlier form of the recipe
    (empty: the recipe's CV)."""
    predict: dict[str, Any] = field(default_factory=dict)
    """Prediction options its scoring needs (empty: the models' own)."""

    def predict_options(self) -> PredictOptions:
        return PredictOptions(**self.predict)


def load_ablations(
    recipes: dict[str, str], folds: int, path: Path = ABLATIONS_FILE
) -> dict[str, Ablation]:
    """The ablations of ``path``, in its order; ``recipes`` maps each dataset to its recipe,
    ``folds`` is the CV's fold count. A wrong entry is one error naming the file and entry."""
    entries = read_yaml(path)
    if not isinstance(entries, dict):
        raise MedgraftError(f"{path}: must map each ablation's name to its entry")
    ablations = {
        name: _ablation(path, str(name), entry, recipes, folds) for name, entry in entries.items()
    }
    for ablation in ablations.values():
        if ablation.baseline and ablation.baseline not in ablations:
            raise MedgraftError(
                f"{path}: {ablation.name}: baseline {ablation.baseline!r} is no ablation here"
            )
    return ablations


def _check_values(where: str, recipe: str, change: dict[str, Any]) -> None:
    """Values the command line would refuse (a loss, schedule or metric not registered, a view
    that is none, a patch larger than the image) refused here too, naming the entry."""
    for option in fields(TrainConfig):
        if option.name in change and "choices" in option.metadata:
            flag = "--" + option.name.replace("_", "-")
            choice = Choice(flag, option.metadata["choices"], option.metadata.get("several", False))
            try:
                choice.parse(str(change[option.name]))
            except MedgraftError as wrong:
                raise MedgraftError(f"{where}: {wrong}") from None
    try:
        layers = [load_recipe(recipe).train, change, {"data": "d", "output": "o"}]
        TrainConfig(**resolve_options(layers))
    except MedgraftError as wrong:
        raise MedgraftError(f"{where}: {wrong}") from None


def _ablation(
    path: Path, name: str, entry: object, recipes: dict[str, str], folds: int
) -> Ablation:
    where = f"{path}: {name}"
    if not isinstance(entry, dict):
        raise MedgraftError(f"{where}: must be a mapping of {', '.join(sorted(REQUIRED))}")
    missing, unknown = REQUIRED - set(entry), set(entry) - REQUIRED - OPTIONAL
    if missing:
        raise MedgraftError(f"{where}: missing {', '.join(sorted(missing))}")
    if unknown:
        raise MedgraftError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if entry["dataset"] not in recipes:
        raise MedgraftError(f"{where}: unknown dataset {entry['dataset']!r}")
    chosen = entry["folds"]
    if not (isinstance(chosen, list) and chosen and all(f in range(folds) for f in chosen)):
        raise MedgraftError(f"{where}: folds must list folds of 0 .. {folds - 1}, got {chosen!r}")
    change = options_from_mapping(entry["change"], path, prefix=f"{name}.change.")
    predict = options_from_mapping(
        entry.get("predict", {}), path, config_class=PredictOptions, prefix=f"{name}.predict."
    )
    _check_values(where, entry["recipe"], change)
    return Ablation(
        name=name,
        dataset=entry["dataset"],
        recipe=entry["recipe"],
        folds=list(chosen),
        change=change,
        summary=str(entry["summary"]),
        why=str(entry["why"]),
        baseline=str(entry.get("baseline", "")),
        predict=predict,
    )
