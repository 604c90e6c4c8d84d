"""Run ``medgraft demo`` several times at the checkout's commit and record what it measured.

    python scripts/measure_demo.py [--repeats 3] [--work runs/demo-measure]

Each run is timed with the machine and the load (appended to ``docs/results/demo/runs.csv``);
``docs/results/demo/dice.csv`` becomes the runs' per-case scores, each row with its run and
commit. ``scripts/report.py`` then gives the range over the runs in the README.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medgraft.lab.demo_runs import measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("runs/demo-measure"))
    args = parser.parse_args()
    measure(args.repeats, args.work)


if __name__ == "__main__":
    main()
