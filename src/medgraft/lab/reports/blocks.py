"""Every results table and figure in README.md and docs/, regenerated from the committed
per-case and timing CSVs, and nothing else: the block machinery (every generated block by name,
the pages that hold them) and the command line of ``scripts/report.py``, whose docstring lists the
sources and what is generated."""

from __future__ import annotations

import argparse
import difflib
import posixpath
import re
import sys
from collections.abc import Callable
from pathlib import Path

from medgraft.lab import CHECKOUT
from medgraft.lab.reports.accuracy import accuracy_page, accuracy_readme
from medgraft.lab.reports.common import DATASETS, RECIPES, RESULTS
from medgraft.lab.reports.demo import demo_page, demo_readme
from medgraft.lab.reports.gpu import (
    bench_amp_cpu_readme,
    bench_gpu_readme,
    bench_predict_readme,
    bench_train_readme,
    gpu_fold,
    gpu_page,
    gpu_profiles_readme,
)
from medgraft.lab.reports.learning_speed import (
    LearningSpeed,
    learning_speed_page,
    learning_speed_plot,
    learning_speed_readme,
)
from medgraft.lab.reports.overview import overview_readme
from medgraft.lab.reports.recipes import recipe_file
from medgraft.lab.reports.study import study_folders, study_readme
from medgraft.study import StudyResults, summary_markdown, write_summary

BLOCKS: dict[str, Callable[[Path], str]] = {
    "overview": overview_readme,
    "demo": demo_readme,
    "accuracy": accuracy_readme,
    "study": study_readme,
    "bench-train": bench_train_readme,
    "bench-predict": bench_predict_readme,
    "bench-amp-cpu": bench_amp_cpu_readme,
    "bench-gpu": bench_gpu_readme,
    "gpu-profiles": gpu_profiles_readme,
    "learning-speed": learning_speed_readme,
}
"""Every generated block by name. Each lives in one of the pages ``block_pages`` lists."""


BLOCK = re.compile(
    r"(<!-- report:(?P<name>[\w-]+) -->)(?P<body>.*?)(<!-- /report:(?P=name) -->)", re.S
)
"""A generated block. A block whose opening marker ends its line holds Markdown blocks (tables,
lists) between marker lines; otherwise it is inline text inside a paragraph."""


LINK = re.compile(r"\]\((?![a-z]+:|#|/)(?P<target>[^)\s]+)\)")
"""A Markdown link to a file of the checkout (not a web address, an anchor or an absolute path)."""


def block_pages(root: Path) -> list[Path]:
    """The pages that may hold generated blocks: README.md and every ``docs/*.md``."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def relink(text: str, folder: str) -> str:
    """``text``'s links, written from the checkout's root, made relative to ``folder`` (the
    folder, from the root, of the page the text goes into)."""
    return LINK.sub(lambda m: f"]({posixpath.relpath(m['target'], folder)})", text)


def block_locations(root: Path) -> dict[str, Path]:
    """Block name → the one page that holds it; a name in no page, in two pages or unknown to
    ``BLOCKS`` stops the report."""
    found: dict[str, list[Path]] = {}
    for page in block_pages(root):
        for match in BLOCK.finditer(page.read_text()):
            found.setdefault(match["name"], []).append(page)
    problems = [
        f"{page.relative_to(root)}: unknown report block {name!r}"
        for name, pages in sorted(found.items())
        if name not in BLOCKS
        for page in pages
    ]
    problems += [
        f"report block {name!r} is in more than one place: "
        + ", ".join(str(p.relative_to(root)) for p in pages)
        for name, pages in sorted(found.items())
        if len(pages) > 1
    ]
    problems += [f"report block {name!r} is in no page" for name in BLOCKS if name not in found]
    if problems:
        raise SystemExit("; ".join(problems))
    return {name: pages[0] for name, pages in found.items()}


def with_blocks(root: Path) -> dict[Path, str]:
    """Each page holding report blocks, path → its text with every block filled from its
    sources, its links relative to the page."""
    pages = sorted(set(block_locations(root).values()))

    def filled(page: Path) -> str:
        folder = page.parent.relative_to(root).as_posix()

        def fill(match: re.Match) -> str:
            body = relink(BLOCKS[match["name"]](root), folder)
            if match["body"].startswith("\n"):
                body = f"\n{body}\n"
            return match[1] + body + match[4]

        return BLOCK.sub(fill, page.read_text())

    return {page: filled(page) for page in pages}


def generated(root: Path) -> dict[Path, str]:
    """Every generated text file, path → the content its sources give."""
    files = {
        **with_blocks(root),
        root / RESULTS / "accuracy.md": accuracy_page(root),
        root / RESULTS / "demo" / "README.md": demo_page(root),
    }
    if LearningSpeed.read(root) is not None:
        files[root / RESULTS / "learning_speed.md"] = learning_speed_page(root)
    if gpu_fold(root) is not None:
        files[root / RESULTS / "gpu.md"] = gpu_page(root)
    for folder in study_folders(root).values():
        files[folder / "summary.md"] = summary_markdown(StudyResults.read(folder))
    for name, dataset in DATASETS.items():
        files[root / RECIPES / f"{dataset.recipe}.yaml"] = recipe_file(root, name)
    return files


def differences(root: Path) -> list[str]:
    """A unified diff per file whose text differs from what its sources give."""
    diffs = []
    for path, text in generated(root).items():
        current = path.read_text() if path.exists() else ""
        if current != text:
            name = str(path.relative_to(root))
            diffs.append(
                "".join(
                    difflib.unified_diff(
                        current.splitlines(keepends=True),
                        text.splitlines(keepends=True),
                        f"{name} (committed)",
                        f"{name} (from its sources)",
                    )
                )
            )
    return diffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    parser.add_argument("--root", type=Path, default=CHECKOUT)
    args = parser.parse_args()
    if args.check:
        diffs = differences(args.root)
        sys.stdout.write("".join(diffs))
        if diffs:
            sys.exit(
                f"{len(diffs)} file(s) differ from their sources; run python scripts/report.py"
            )
        print("every generated table matches its sources")
        return
    for path, text in generated(args.root).items():
        path.write_text(text)
        print(f"wrote {path.relative_to(args.root)}")
    for folder in study_folders(args.root).values():
        write_summary(folder)  # and its plots
    learning_speed_plot(args.root)
