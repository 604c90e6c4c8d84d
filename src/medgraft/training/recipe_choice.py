"""The recipe ``medgraft train`` uses when none is named: the shipped one that fits the data.

A newcomer's first ``medgraft train --data MY_DATA --output runs/x`` should train what the
project measured, not the flat schema defaults. The choice reads only what discovery already
knows (no image is decoded): volumes or 2D images, and their channels.

- Volumes, whatever their channels: ``mri-2.5d``; with ``--dims 3``, ``mri-3d``.
- 2D images read as RGB (no named channels): ``rgb-2d``, unless a label's name in
  ``dataset.json`` names thin structures (vessels, arteries, veins): then ``retina-2d``.
  Thin against blob-like targets is what separates the two 2D recipes, and it is a property of
  the masks, which discovery does not read; guessing it from the masks' shapes would need every
  mask decoded, and a wrong guess costs accuracy either way (``retina-2d`` draws 32 samples per
  epoch, sized for DRIVE's 20 images, so hundreds of images would go mostly unseen; ``rgb-2d``'s
  160 px loses thin vessels, where on DRIVE 384 px was already 0.023 Dice behind 576 px). So
  ``retina-2d`` is chosen only on the user's own word, a label name, and the printed line names
  it for images without one.
- 2D images with several named channels (nnU-Net ``channel_names``): no shipped recipe was
  measured on such data, so the plain defaults train.

``--recipe none`` keeps the plain defaults, ``--resume`` continues with the recipe the run
started with. Callers that build ``TrainConfig`` themselves (the demo, the study, the tests'
trainings) never pass through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medgraft.config.resolve import saved_recipe
from medgraft.data.discovery import DatasetSpec, discover_dataset

NO_RECIPE = "none"
"""``--recipe none``: the plain schema defaults, no recipe chosen."""

THIN_STRUCTURE_WORDS = ("vessel", "arter", "vein")
"""Label-name parts that mark thin, branching targets (``retina-2d``'s kind)."""


@dataclass(frozen=True)
class RecipeChoice:
    recipe: str | None
    """The recipe to train with, None for the plain defaults."""
    line: str | None = None
    """Which recipe was chosen and why, when ``train`` chose it (printed and recorded)."""


def choose_recipe(spec: DatasetSpec, dims: int | None = None) -> RecipeChoice:
    """The shipped recipe that fits the dataset ``spec`` describes (and ``--dims``, when
    given), with the line saying why."""
    cases = len(spec.training)
    plain = "the plain defaults: --recipe none"
    if spec.is_volumetric:
        channels = max(len(spec.channels), 1)
        if dims == 3:
            return RecipeChoice(
                "mri-3d",
                f"recipe mri-3d, chosen for --dims 3 on {cases} volumes of {channels} "
                f"channel(s) ({plain})",
            )
        return RecipeChoice(
            "mri-2.5d",
            f"recipe mri-2.5d, chosen for {cases} volumes of {channels} channel(s) ({plain})",
        )
    if len(spec.channels) > 1:
        return RecipeChoice(
            None,
            f"no recipe: no shipped recipe was measured on 2D images of {len(spec.channels)} "
            "named channels, so the plain defaults train (--recipe NAME picks one)",
        )
    thin = [name for name in (spec.labels or {}).values() if _names_thin_structures(name)]
    if thin:
        return RecipeChoice(
            "retina-2d",
            f"recipe retina-2d, chosen for {cases} 2D images whose label '{thin[0]}' names thin "
            f"structures (blob-like targets: --recipe rgb-2d; {plain})",
        )
    return RecipeChoice(
        "rgb-2d",
        f"recipe rgb-2d, chosen for {cases} 2D images (thin structures such as vessels: "
        f"--recipe retina-2d; {plain})",
    )


def _names_thin_structures(label: str) -> bool:
    return any(word in label.lower() for word in THIN_STRUCTURE_WORDS)


def recipe_for_training(recipe: str | None, given: dict[str, Any]) -> RecipeChoice:
    """The recipe a ``train`` call trains with: the one named (``none``: no recipe); for
    ``--resume``, the one its run started with; else the one that fits ``--data``.
    ``given`` holds the options of the ``--config`` file and the typed flags."""
    if recipe is not None:
        return RecipeChoice(None if recipe == NO_RECIPE else recipe)
    if given.get("resume"):
        return RecipeChoice(saved_recipe(Path(given["output"])) if "output" in given else None)
    if "data" not in given:  # the options' check names what is missing
        return RecipeChoice(None)
    spec = discover_dataset(given["data"], given.get("labels_dir"), given.get("roi_dir"))
    return choose_recipe(spec, given.get("dims"))
