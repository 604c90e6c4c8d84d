"""The transfer studies' block: ImageNet against scratch per label fraction, from each
``docs/results/study_<data>/``."""

from __future__ import annotations

from pathlib import Path

from medgraft.lab.measured import note
from medgraft.lab.reports.common import RESULTS, STUDIES, block
from medgraft.study import StudyResults


def study_folders(root: Path) -> dict[str, Path]:
    return {
        name: root / RESULTS / f"study_{name}"
        for name in STUDIES
        if (root / RESULTS / f"study_{name}" / "cases.csv").exists()
    }


def study_readme(root: Path) -> str:
    folders = study_folders(root)
    if not folders:
        return "No study on the shared data has been measured with this version yet."
    lines = [
        "| data | init | "
        + " | ".join(f"{f:.0%} of the labels" for f in _fractions(folders))
        + " |",
        "| --- | --- |" + " --- |" * len(_fractions(folders)),
    ]
    claims = []
    for name, folder in folders.items():
        results = StudyResults.read(folder)
        seeds = len({r["seed"] for r in results.runs})
        validation = len({r["case"] for r in results.cases})
        largest = max(results.fractions)
        title = (
            f"[{STUDIES[name]}]({folder.relative_to(root)}/summary.md), "
            f"{results.train_cases(largest)} training cases at {largest:.0%}, "
            f"{results.plan['epochs']} epochs, {seeds} seeds, {validation} validation cases"
        )
        for index, init in enumerate(results.inits):
            cells = [str(results.interval(init, f) or "-") for f in _fractions(folders)]
            label = {"imagenet": "ImageNet", "none": "scratch"}.get(init, init)
            lines.append(f"| {title if index == 0 else ''} | {label} | " + " | ".join(cells) + " |")
        for fraction in results.fractions:
            difference = results.versus_scratch("imagenet", fraction)
            if difference is not None:
                claims.append(
                    f"{STUDIES[name]}, {fraction:.0%} of the labels: ImageNet is "
                    f"**{difference.verdict}** (difference {difference})"
                )
    return block(
        "study_block.md.j2",
        table=lines,
        claims=claims,
        measured=[(STUDIES[name], note(root, "study", name=name)) for name in folders],
    )


def _fractions(folders: dict[str, Path]) -> list[float]:
    return sorted({f for folder in folders.values() for f in StudyResults.read(folder).fractions})
