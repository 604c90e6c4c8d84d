"""The README's overview block: learning speed and the transfer studies in one small table."""

from __future__ import annotations

from pathlib import Path

from medgraft.lab.measured import note
from medgraft.lab.reports.common import STUDIES, block
from medgraft.lab.reports.learning_speed import LearningSpeed
from medgraft.lab.reports.study import study_folders
from medgraft.study import StudyResults


def overview_readme(root: Path) -> str:
    """The learning-speed and transfer results in one small table: medgraft with the ImageNet
    encoder against scratch (and nnU-Net) at the first and last CPU-minute point and at each
    study's label fractions."""
    speed, folders = LearningSpeed.read(root), study_folders(root)
    if speed is None and not folders:
        return "Not measured with this version."
    lines = [
        "| measured on | ImageNet encoder | from scratch | nnU-Net v2 `2d` "
        "| ImageNet against scratch |",
        "| --- | --- | --- | --- | --- |",
    ]
    methods = ("medgraft-imagenet", "medgraft-scratch", "nnunet-2d")
    if speed is not None and set(methods[:2]) <= set(speed.methods):
        for point in sorted({speed.point_minutes[0], speed.point_minutes[-1]}):
            cells = [str(speed.interval(m, point) or "-") for m in methods]
            difference = speed.difference(*methods[:2], point)
            verdict = f"**{difference.verdict}**, {difference}" if difference is not None else "-"
            lines.append(
                f"| hippocampus fold 0, after {point} CPU-minutes of training | "
                + " | ".join(cells)
                + f" | {verdict} |"
            )
    for name, folder in folders.items():
        results = StudyResults.read(folder)
        for fraction in results.fractions:
            difference = results.versus_scratch("imagenet", fraction)
            if difference is None:
                continue
            cells = [str(results.interval(init, fraction) or "-") for init in ("imagenet", "none")]
            lines.append(
                f"| {STUDIES[name]}, {results.train_cases(fraction)} training cases "
                f"({fraction:.0%} of the labels), {results.plan['epochs']} epochs | "
                + " | ".join(cells)
                + f" | - | **{difference.verdict}**, {difference} |"
            )
    return block(
        "overview_block.md.j2",
        table=lines,
        speed_measured=note(root, "learning-speed"),
        studies=[(STUDIES[name], note(root, "study", name=name)) for name in study_folders(root)],
    )
