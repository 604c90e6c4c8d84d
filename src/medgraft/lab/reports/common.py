"""What several reports share: where the results lie, the datasets the recipes are measured on,
and the paired Dice and wall-time helpers."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined

from medgraft.lab.measured import note

RESULTS = Path("docs/results")
RECIPES = Path("src/medgraft/config/recipes")
STUDIES = {"hippocampus": "MSD hippocampus", "kvasir": "Kvasir-SEG"}
TEMPLATES = Environment(
    loader=PackageLoader("medgraft.lab.reports", "templates"),
    autoescape=False,  # Markdown, whose backticks and links must pass as written
    undefined=StrictUndefined,  # a value the Python forgot fails, never prints as nothing
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
"""The pages' prose lives in ``templates/``; the Python only computes the figures it quotes."""


@dataclass(frozen=True)
class Dataset:
    title: str
    recipe: str
    goal: float | None
    published: str
    distance_unit: str


DATASETS = {
    "hippocampus": Dataset(
        "MSD Hippocampus, 180 MRI volumes",
        "mri-2.5d",
        0.89,
        "nnU-Net ≈ 0.90 / 0.89 (Isensee et al., Nat. Methods 2021; MSD test set)",
        "mm",
    ),
    "kvasir": Dataset(
        "Kvasir-SEG, 700 images",
        "rgb-2d",
        0.90,
        "U-Net[ResNet34] 0.876, HarDNet-MSEG 0.904 (880/120 split); PraNet 0.898 (PraNet split)",
        "px",
    ),
    "drive": Dataset(
        "DRIVE, 20 images",
        "retina-2d",
        0.82,
        "U-Net ≈ 0.81, R2U-Net 0.817, LadderNet 0.820 F1 (test set, inside the FOV mask)",
        "px",
    ),
}


def render(template: str, **values: object) -> str:
    """A page or block of ``templates/`` filled with ``values``."""
    return TEMPLATES.get_template(template).render(**values)


def block(template: str, **values: object) -> str:
    """A block of ``templates/`` filled with ``values``: inline text or lines between the block's
    markers, with no newline of its own."""
    return render(template, **values).removesuffix("\n")


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def measured_sentence(root: Path, figure: str, **where: str) -> str:
    """The note of :func:`medgraft.lab.measured.note` as a sentence of its own."""
    text = note(root, figure, **where)
    return f"{text[0].upper()}{text[1:]}."


def dice_by_case(rows: list[dict], class_name: str | None) -> dict[str, float]:
    """Dice per case of one class, or the mean over the classes."""
    by_case: dict[str, list[float]] = {}
    for row in rows:
        if class_name is None or row["class"] == class_name:
            by_case.setdefault(row["case"], []).append(float(row["dice"]))
    return {case: float(np.mean(values)) for case, values in by_case.items()}


def wall_text(folds: list[dict]) -> str:
    """Median wall time of the folds, marked when any shared the cores with other jobs."""
    minutes = median([float(f["seconds"]) for f in folds]) / 60
    shared = sum(f["shared"] == "yes" for f in folds)
    return f"{minutes:.1f} min" + (
        f" ({shared} of {len(folds)} shared the cores)" if shared else ""
    )


def paired_dice(
    first: list[dict], second: list[dict], class_name: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Dice of the cases both scored (one class, or the class mean), in the same order."""
    ours, theirs = dice_by_case(first, class_name), dice_by_case(second, class_name)
    common = sorted(set(ours) & set(theirs))
    return np.array([ours[c] for c in common]), np.array([theirs[c] for c in common])
