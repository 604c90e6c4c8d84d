"""The ``measured:`` block that ends each shipped recipe (``src/medgraft/config/recipes/*.yaml``):
this module is what writes them now, from the accuracy CV, so ``medgraft recipes`` quotes the
same figures as the accuracy page. ``report --check`` compares the recipe files too, so a figure
edited by hand in a recipe fails it (``tests/test_report.py``)."""

from __future__ import annotations

from pathlib import Path

from medgraft.lab.reports.accuracy import Accuracy, accuracy_sources
from medgraft.lab.reports.common import DATASETS, RECIPES


def recipe_measured_block(root: Path, name: str) -> str:
    """The ``measured:`` block that ends a recipe file: what ``medgraft recipes`` shows."""
    cases, folds = accuracy_sources(root)
    result = Accuracy(cases, folds, name, "recipe")
    dataset = DATASETS[name]
    lines = ["measured:  # written by scripts/report.py from docs/results/accuracy/*.csv"]
    if not result:
        return "\n".join([*lines, '  result: "not measured with this recipe yet"', ""])
    per_class = ", ".join(f"{c} {result.of_class(c).dice.mean():.3f}" for c in result.classes)
    machine = folds_machine([f for f in folds if f["dataset"] == name])
    lines += [
        f"  dataset: {dataset.title} (../shared/data), {len(result.fold_ids)}-fold CV, "
        "last-epoch models",
        f'  result: "Dice {per_class} (mean {result.foreground().mean:.3f}); goal '
        f'{result.goal_text()}"',
        f"  wall_time: {result.median_fold_minutes():.1f} min per fold (median of "
        f"{len(result.folds)})",
        f"  hardware: {machine}",
        "  report: docs/results/accuracy.md",
        "",
    ]
    return "\n".join(lines)


def folds_machine(folds: list[dict]) -> str:
    first = folds[0]
    return f"{first['cpu']}, {first['cores']} cores, GPU {first['gpu']}, torch {first['torch']}"


def recipe_file(root: Path, name: str) -> str:
    path = root / RECIPES / f"{DATASETS[name].recipe}.yaml"
    text = path.read_text()
    head = text[: text.index("\nmeasured:") + 1] if "\nmeasured:" in text else text
    return head + recipe_measured_block(root, name)
