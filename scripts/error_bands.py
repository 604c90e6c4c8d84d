"""What limits the cross-validated Dice: where each fold's wrong voxels lie.

For every CV fold of a dataset this scores the recipe's predictions (``predictions-recipe`` in
the fold's folder, written by ``accuracy_cv.py report``) again with medgraft's evaluation and
splits each class's wrong voxels into those touching the truth's border and those far from it (see
``medgraft.evaluation.metrics.error_bands_per_class``). Rows per case and class go to
``docs/results/accuracy/error_bands.csv`` (other datasets' rows are kept); ``report.py`` turns
them into the "Where the errors lie" table of ``accuracy.md``.

    python scripts/error_bands.py --dataset hippocampus [--work runs/accuracy]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medgraft.crossval import fold_cases, fold_folder
from medgraft.data.discovery import discover_dataset
from medgraft.evaluation.evaluate import evaluate_folders
from medgraft.evaluation.metrics import ERROR_BANDS
from medgraft.files import read_csv, write_csv
from medgraft.lab import CHECKOUT
from medgraft.lab.accuracy_cv import DATASETS, FOLDS, dataset_folder, fold_runs

COLUMNS = ["dataset", "recipe", "fold", "case", "class", *ERROR_BANDS]


def fold_rows(name: str, output: Path, fold: int) -> list[dict]:
    """Error bands of one fold's validation cases, as segmented for the CV's scores."""
    options = DATASETS[name]["options"]
    data = dataset_folder(name)
    spec = discover_dataset(data, options.get("labels_dir"), options.get("roi_dir"))
    cases = fold_cases(output, fold)
    records = [r for r in spec.training if r.case_id in set(cases)]
    scored = fold_folder(output, fold, list(fold_runs(name, data, output, fold)))
    evaluation = evaluate_folders(
        scored / "predictions-recipe",
        Path(records[0].label).parent,
        spec.labels,
        cases=sorted(cases),
        stray_to_background=options.get("stray_labels_to_background", False),
        roi_mask=data / options["roi_dir"] if "roi_dir" in options else None,
        error_bands=True,
    )
    return [
        {
            "dataset": name,
            "recipe": DATASETS[name]["recipe"],
            "fold": fold,
            "case": row["case_id"],
            "class": class_name,
            **{band: row[f"{band}_{class_name}"] for band in ERROR_BANDS},
        }
        for row in evaluation.rows
        for class_name in evaluation.label_names.values()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), action="append", required=True)
    parser.add_argument("--work", type=Path, default=CHECKOUT / "runs/accuracy")
    parser.add_argument("--results", type=Path, default=CHECKOUT / "docs/results")
    args = parser.parse_args()
    path = args.results / "accuracy" / "error_bands.csv"
    kept = [r for r in read_csv(path) if r["dataset"] not in args.dataset]
    rows = kept + [
        row
        for name in args.dataset
        for fold in range(FOLDS)
        for row in fold_rows(name, args.work / name, fold)
    ]
    write_csv(path, rows, COLUMNS)
    print(f"wrote {len(rows)} rows to {path}; now run scripts/report.py")


if __name__ == "__main__":
    main()
