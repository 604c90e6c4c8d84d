"""``medgraft study`` on the shared real data: MSD hippocampus (3D MRI) and Kvasir-SEG (2D RGB).

Builds reproducible subsets of ``../shared/data`` that fit a CPU budget, runs the study on each
through the CLI (resumable: rerun this script after an interruption and finished runs are
skipped), and copies each study's sources (plan, per-run and per-case CSVs, split) to
``docs/results/study_<dataset>/``, where its summary and plots are derived from them.

    python scripts/real_data_study.py [--only hippocampus|kvasir]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from medgraft.lab import CHECKOUT
from medgraft.lab.shared_subsets import hippocampus_subset, kvasir_subset
from medgraft.study import write_summary

STUDIES = {
    "hippocampus": {
        "subset": lambda target: hippocampus_subset(target, cases=40, seed=0),
        "epochs": 5,
        "options": {"offline": True},
    },
    "kvasir": {
        "subset": lambda target: kvasir_subset(target, cases=200, seed=0),
        "epochs": 8,
        "options": {"offline": True, "image_size": 160, "batch_size": 16},
    },
}
RESULT_FILES = ("plan.json", "results.csv", "cases.csv", "curves.csv", "split.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/studies"))
    parser.add_argument("--results", type=Path, default=Path("docs/results"))
    parser.add_argument("--only", choices=sorted(STUDIES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--fractions", default="0.1,0.25,1.0")
    args = parser.parse_args()
    os.chdir(CHECKOUT)  # relative paths, so the summaries show commands that work in any checkout
    for name, setup in STUDIES.items():
        if args.only and name != args.only:
            continue
        data = setup["subset"](args.work / f"data-{name}")
        config = args.work / f"{name}.yaml"
        config.write_text(yaml.safe_dump(setup["options"]))
        output = args.work / f"study-{name}"
        command = [
            sys.executable, "-m", "medgraft", "study",
            "--data", str(data), "--output", str(output), "--config", str(config),
            "--inits", "imagenet,none", "--fractions", args.fractions,
            "--seeds", str(args.seeds), "--epochs", str(setup["epochs"]), "--val-fraction", "0.2",
        ]  # fmt: skip
        print("$", " ".join(command[1:]), flush=True)
        subprocess.run(command, check=True)
        target = args.results / f"study_{name}"
        target.mkdir(parents=True, exist_ok=True)
        for path in [*(output / f for f in RESULT_FILES), config]:
            shutil.copy(path, target / path.name)
        write_summary(target)  # summary and plots from the copied sources, as report.py does
        print(f"results in {target}")


if __name__ == "__main__":
    main()
