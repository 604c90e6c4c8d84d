"""Learning speed: Dice on one hippocampus fold after 5, 15, 30 and 60 CPU-minutes of training,
medgraft (ImageNet encoder, and the same from scratch) against nnU-Net v2 ``2d``.

The code of ``scripts/learning_speed.py`` (``prepare``, ``calibrate``, ``train``, ``score``); its
docstring says how the clock, the runs and the scoring work.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

from medgraft.evaluation.metrics import METRICS
from medgraft.files import append_csv, read_csv, write_csv
from medgraft.lab import CHECKOUT
from medgraft.lab.shared_subsets import SHARED
from medgraft.provenance import Measurement, machine

HIPPOCAMPUS = SHARED / "hippocampus"
FOLDS, FOLD = 5, 0
POINTS_MIN = [5, 15, 30, 60]
RECIPE = "mri-2.5d"
MEDGRAFT_METHODS = {"medgraft-imagenet": "imagenet", "medgraft-scratch": "none"}
NNUNET_METHODS = {"nnunet-2d": "2d", "nnunet-3d_fullres": "3d_fullres"}  # configurations
METHODS = [*MEDGRAFT_METHODS, *NNUNET_METHODS]
TRAINED_BY_DEFAULT = ["medgraft-imagenet", "medgraft-scratch", "nnunet-2d"]
NNUNET_DATASET = "Dataset004_Hippocampus"
NNUNET_BATCH = {"2d": 32}  # set in nnUNetPlans.json; 3d_fullres keeps its stock batch
NNUNET_ITERATIONS_PER_EPOCH = 50
CALIBRATION_ITERATIONS = {"medgraft": 12, "2d": 12, "3d_fullres": 4}
CASE_COLUMNS = ["method", "seed", "point_min", "case", "class", *METRICS.names()]


class Paths:
    """Where everything of one study lives (``--work``) and where its results go; each seed's
    runs and predictions have their own folders (seed 0 those of the first round), the data,
    nnU-Net's preprocessing and the calibration are shared."""

    def __init__(self, work: Path, results: Path, nnunet_python: Path, seed: int = 0) -> None:
        self.work, self.results, self.nnunet_python = work, results, nnunet_python
        self.seed = seed
        self.runs = work if seed == 0 else work / f"seed_{seed}"
        self.split = work / "splits.json"
        self.val_images = work / "val_images"  # <case>.nii.gz, for medgraft
        self.nnunet = work / "nnunet"
        self.nnunet_results = self.nnunet / ("results" if seed == 0 else f"results_seed_{seed}")
        self.nnunet_val_images = self.nnunet / "val_images"  # <case>_0000.nii.gz
        self.calibration = work / "calibration.json"

    def nnunet_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "nnUNet_raw": str(self.nnunet / "raw"),
            "nnUNet_preprocessed": str(self.nnunet / "preprocessed"),
            "nnUNet_results": str(self.nnunet_results),
            "nnUNet_n_proc_DA": "0",  # augmentation in the training process: on its clock
            "nnUNet_compile": "false",
            "OMP_NUM_THREADS": "1",
        }

    def nnunet_model(self, configuration: str) -> Path:
        trainer = f"nnUNetTrainerCPUBudget__nnUNetPlans__{configuration}"
        return self.nnunet_results / NNUNET_DATASET / trainer

    def snapshot(self, method: str, point: int) -> Path:
        if method in NNUNET_METHODS:
            model = self.nnunet_model(NNUNET_METHODS[method])
            return model / "fold_all" / f"snapshot_cpu_{point:03d}min.pth"
        return self.runs / method / f"fold_{FOLD}" / "snapshots" / f"cpu_{point:03d}min.pt"


def fold_cases(paths: Paths) -> tuple[list[str], list[str]]:
    """Fold 0's training and validation cases (the split ``accuracy_cv.py`` uses)."""
    from medgraft.data.discovery import discover_dataset
    from medgraft.data.splits import fold_split

    spec = discover_dataset(HIPPOCAMPUS)
    train, val = fold_split(spec.training, paths.work, FOLDS, FOLD, seed=0)
    return [r.case_id for r in train], [r.case_id for r in val]


# -- prepare ---------------------------------------------------------------------------------


def prepare(paths: Paths) -> None:
    """Validation images for both tools; nnU-Net's raw dataset of the training cases, planned
    and preprocessed (2d), its batch size set, and the budget trainer installed."""
    import nibabel as nib
    import numpy as np

    train_cases, val_cases = fold_cases(paths)
    raw = paths.nnunet / "raw" / NNUNET_DATASET
    for folder in (paths.val_images, paths.nnunet_val_images, raw / "imagesTr", raw / "labelsTr"):
        folder.mkdir(parents=True, exist_ok=True)
    for case in val_cases:
        source = HIPPOCAMPUS / "imagesTr" / f"{case}.nii.gz"
        _link(paths.val_images / f"{case}.nii.gz", source)
        _link(paths.nnunet_val_images / f"{case}_0000.nii.gz", source)
    for case in train_cases:
        _link(raw / "imagesTr" / f"{case}_0000.nii.gz", HIPPOCAMPUS / "imagesTr" / f"{case}.nii.gz")
        label_path = raw / "labelsTr" / f"{case}.nii.gz"
        if not label_path.exists():
            # hippocampus_243 holds one voxel of -2, which nnU-Net refuses: background, as
            # medgraft's --stray-labels-to-background does in the recipe's runs
            label = nib.load(HIPPOCAMPUS / "labelsTr" / f"{case}.nii.gz")
            values = np.asarray(label.dataobj).astype(np.int16)
            values[(values < 0) | (values > 2)] = 0
            nib.save(nib.Nifti1Image(values, label.affine, label.header), label_path)
    manifest = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
        "numTraining": len(train_cases),
        "file_ending": ".nii.gz",
    }
    (raw / "dataset.json").write_text(json.dumps(manifest, indent=1))
    plans = paths.nnunet / "preprocessed" / NNUNET_DATASET / "nnUNetPlans.json"
    configurations = list(NNUNET_METHODS.values())
    missing = [c for c in configurations if not (plans.parent / f"nnUNetPlans_{c}").exists()]
    if missing:  # (re-planning rewrites the plans; the batch sizes are set again below)
        _nnunet(paths, "nnUNetv2_plan_and_preprocess", "-d", "4", "-c", *missing, "-np", "1")
    content = json.loads(plans.read_text())
    for name in configurations:
        configuration = content["configurations"][name]
        stock = configuration.setdefault("medgraft_stock_batch_size", configuration["batch_size"])
        configuration["batch_size"] = NNUNET_BATCH.get(name, stock)
        print(f"nnU-Net {name} plan: batch size {stock} -> {configuration['batch_size']}")
    plans.write_text(json.dumps(content, indent=1))


def _link(link: Path, target: Path) -> None:
    if not link.exists():
        link.symlink_to(target.resolve())


def _nnunet(paths: Paths, tool: str, *args: str) -> None:
    command = [str(paths.nnunet_python.parent / tool), *args]
    print("$", " ".join(command), flush=True)
    # the planner sets its thread count from nnUNet_n_proc_DA, which must then be positive
    subprocess.run(command, check=True, env=paths.nnunet_env() | {"nnUNet_n_proc_DA": "1"})


def _nnunet_site(paths: Paths) -> Path:
    found = subprocess.run(
        [str(paths.nnunet_python), "-c", "import nnunetv2; print(nnunetv2.__path__[0])"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return Path(found.stdout.strip())


# -- medgraft's runs -------------------------------------------------------------------------


def clock_record(run: Path) -> dict[str, float]:
    """The CPU seconds and iterations the cpu-budget trainer recorded at its last epoch's end."""
    return json.loads((run / f"fold_{FOLD}" / "snapshots" / "clock.json").read_text())


def medgraft_config(
    paths: Paths, method: str, epochs: int, points_min: list[int], **changed: object
):
    """The recipe's options for one method, trained by medgraft's ``cpu-budget`` trainer: the
    CPU clock, a snapshot at each point, the fold's validation cases left out of training and
    of per-epoch validation (they are scored from the snapshots)."""
    from medgraft.config.resolve import train_configs

    output = paths.runs / method
    flags = {
        "data": str(HIPPOCAMPUS), "output": str(output), "folds": FOLDS, "offline": True,
        "seed": paths.seed,
        "stray_labels_to_background": True, "epochs": epochs, "num_workers": 0,
        "weights": MEDGRAFT_METHODS[method], "views": "axial",
        "resume": (output / f"fold_{FOLD}" / "snapshots" / "clock.json").exists(),
        "trainer": "cpu-budget", "cpu_budget_minutes": ",".join(map(str, points_min)),
    }  # fmt: skip
    [config] = train_configs(flags | changed, recipe=RECIPE, fold=str(FOLD))
    return config


def train_medgraft(paths: Paths, method: str, points_min: list[int]) -> None:
    import torch

    torch.set_num_threads(1)
    plan = json.loads(paths.calibration.read_text())[method]
    (paths.runs / method / f"fold_{FOLD}" / "snapshots").mkdir(parents=True, exist_ok=True)
    _copy_split(paths, paths.runs / method)
    from medgraft.training.trainer import run_training

    run_training(medgraft_config(paths, method, plan["epochs"], points_min))


def _copy_split(paths: Paths, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    if not (output / "splits.json").exists():
        shutil.copyfile(paths.split, output / "splits.json")


# -- nnU-Net's run ---------------------------------------------------------------------------


def train_nnunet(
    paths: Paths, method: str, points_min: list[int], plan: dict | None = None
) -> None:
    # the budget trainer goes where nnU-Net looks for trainers (predict needs it there too)
    trainer_module = _nnunet_site(paths) / "training/nnUNetTrainer/variants/medgraft_budget.py"
    shutil.copyfile(CHECKOUT / "scripts" / "nnunet_budget.py", trainer_module)
    plan = plan or json.loads(paths.calibration.read_text())[method]
    configuration = NNUNET_METHODS[method]
    budget = paths.nnunet_results / f"budget_{configuration}.json"
    budget.parent.mkdir(parents=True, exist_ok=True)
    budget.write_text(json.dumps({
        "dataset": "4", "configuration": configuration, "threads": 1, "points_min": points_min,
        "epochs": plan["epochs"], "iterations_per_epoch": plan["iterations_per_epoch"],
    }))  # fmt: skip
    resume = (paths.nnunet_model(configuration) / "fold_all" / "checkpoint_latest.pth").exists()
    command = [str(paths.nnunet_python), "-m",
               "nnunetv2.training.nnUNetTrainer.variants.medgraft_budget", str(budget)]  # fmt: skip
    print("$", " ".join(command), flush=True)
    subprocess.run(command + (["--continue"] if resume else []), check=True, env=paths.nnunet_env())


# -- calibration -----------------------------------------------------------------------------


def committed_plans(path: Path) -> dict[str, dict]:
    """The plans of the committed calibration, so that runs of a later seed, on a fresh
    machine, train the very schedule the first seed's runs did."""
    return {
        row["method"]: {
            "cpu_seconds_per_iteration": float(row["cpu_seconds_per_iteration"]),
            "iterations_per_epoch": int(row["iterations_per_epoch"]),
            "epochs": int(row["planned_epochs"]),
        }
        for row in read_csv(path)
    }


def calibrate(paths: Paths) -> None:
    """CPU seconds per training iteration of each method (one thread), and the epochs that
    make each schedule end at the last point."""
    import torch

    from medgraft.config.recipes import load_recipe
    from medgraft.training.trainer import run_training

    torch.set_num_threads(1)
    plans = json.loads(paths.calibration.read_text()) if paths.calibration.exists() else {}
    plans = plans or committed_plans(paths.results / "learning_speed_calibration.csv")
    budget_s = POINTS_MIN[-1] * 60
    for method in MEDGRAFT_METHODS:
        if method in plans:
            continue
        work = Paths(paths.work / "calibration", paths.results, paths.nnunet_python)
        work.split = paths.split
        _copy_split(work, work.work / method)
        samples = 32 * CALIBRATION_ITERATIONS["medgraft"]
        config = medgraft_config(
            work, method, 1, [10_000], samples_per_epoch=samples, overwrite=True, resume=False
        )
        run_training(config)
        clock = clock_record(work.work / method)
        per_iteration = clock["cpu_seconds"] / clock["iterations"]
        recipe = load_recipe(RECIPE).train
        iterations_per_epoch = recipe["samples_per_epoch"] // recipe["batch_size"]
        plans[method] = {
            "cpu_seconds_per_iteration": per_iteration,
            "iterations_per_epoch": iterations_per_epoch,
            "epochs": math.ceil(budget_s / (per_iteration * iterations_per_epoch)),
        }
        paths.calibration.write_text(json.dumps(plans, indent=1))
    for method, configuration in NNUNET_METHODS.items():
        if method in plans:
            continue
        model = paths.nnunet_model(configuration)
        iterations = CALIBRATION_ITERATIONS[configuration]
        train_nnunet(paths, method, [], {"epochs": 1, "iterations_per_epoch": iterations})
        clock = json.loads((model / "fold_all" / "clock.json").read_text())
        shutil.rmtree(model)  # the real run starts from scratch
        per_iteration = clock["cpu_seconds"] / clock["iterations"]
        plans[method] = {
            "cpu_seconds_per_iteration": per_iteration,
            "iterations_per_epoch": NNUNET_ITERATIONS_PER_EPOCH,
            "epochs": math.ceil(budget_s / (per_iteration * NNUNET_ITERATIONS_PER_EPOCH)),
        }
    paths.calibration.write_text(json.dumps(plans, indent=1))
    print(json.dumps(plans, indent=1))


# -- scoring ---------------------------------------------------------------------------------


def predict(paths: Paths, method: str, point: int, tta: bool) -> Path | None:
    """Segment the validation cases with one snapshot (once); the call's time is recorded."""
    snapshot = paths.snapshot(method, point)
    if not snapshot.exists():
        return None
    output = paths.runs / "predictions" / f"{method}-{point:03d}min{'-tta' if tta else ''}"
    if (output / ".done").exists():
        return output
    if output.exists():
        shutil.rmtree(output)
    if method in NNUNET_METHODS:
        command = [str(paths.nnunet_python.parent / "nnUNetv2_predict"), "-i",
                   str(paths.nnunet_val_images), "-o", str(output), "-d", "4",
                   "-c", NNUNET_METHODS[method],
                   "-f", "all", "-tr", "nnUNetTrainerCPUBudget", "-chk", snapshot.name,
                   "-device", "cpu", *([] if tta else ["--disable_tta"])]  # fmt: skip
        env = paths.nnunet_env() | {"OMP_NUM_THREADS": str(os.cpu_count())}
    else:
        command = [sys.executable, "-m", "medgraft", "predict", "--model", str(snapshot),
                   "-i", str(paths.val_images), "-o", str(output)]  # fmt: skip
        env = dict(os.environ)
    print("$", " ".join(command), flush=True)
    with Measurement() as measured:
        subprocess.run(command, check=True, env=env)
    cases = len(list(paths.val_images.glob("*.nii.gz")))
    row = {"method": method, "seed": paths.seed, "point_min": point,
           "tta": "yes" if tta else "no", "cases": cases,
           "seconds_per_case": f"{measured.seconds / cases:.2f}", **measured.record()}  # fmt: skip
    append_csv(paths.results / "learning_speed_inference.csv", [row])
    (output / ".done").write_text("")
    return output


def score(paths: Paths) -> None:
    from medgraft.evaluation.evaluate import evaluate_folders

    _, val_cases = fold_cases(paths)
    rows, points = [], []
    for method in METHODS:
        for point in POINTS_MIN:
            last = point == POINTS_MIN[-1]
            ttas = [False, True] if method in NNUNET_METHODS and last else [False]
            for tta in ttas:
                predictions = predict(paths, method, point, tta)
                if predictions is None or tta:
                    continue
                evaluation = evaluate_folders(
                    predictions, HIPPOCAMPUS / "labelsTr", {1: "Anterior", 2: "Posterior"},
                    cases=val_cases, stray_to_background=True,
                )  # fmt: skip
                rows += [
                    {
                        "method": method,
                        "seed": paths.seed,
                        "point_min": point,
                        "case": row["case_id"],
                        "class": name,
                    }
                    | {m: f"{row[f'{m}_{name}']:.5f}" for m in METRICS}
                    for row in evaluation.rows
                    for name in evaluation.label_names.values()
                ]
                taken = json.loads(paths.snapshot(method, point).with_suffix(".json").read_text())
                points.append({"method": method, "seed": paths.seed, "point_min": point,
                               "cpu_minutes": f"{taken['cpu_seconds'] / 60:.2f}",
                               "iterations": taken["iterations"], "epoch": taken["epoch"],
                               **_setup(paths, method), **_machine_columns()})  # fmt: skip
    scored = {row["method"] for row in rows}
    _replace_runs(paths.results / "learning_speed.csv", paths.seed, scored, rows)
    _replace_runs(paths.results / "learning_speed_points.csv", paths.seed, scored, points)
    have_runs = {row["method"] for row in read_csv(paths.results / "learning_speed_points.csv")}
    calibration = []
    for method, plan in json.loads(paths.calibration.read_text()).items():
        trained = method in have_runs
        per_iteration = plan["cpu_seconds_per_iteration"]
        iterations = CALIBRATION_ITERATIONS[NNUNET_METHODS.get(method, "medgraft")]
        calibration.append({
            "method": method, "cpu_seconds_per_iteration": f"{per_iteration:.2f}",
            "calibration_iterations": iterations, "trained": "yes" if trained else "no",
            **_setup(paths, method),
        })  # fmt: skip
    if paths.seed == 0:  # the plans every seed trains with
        path = paths.results / "learning_speed_calibration.csv"
        write_csv(path, calibration, list(calibration[0]), line_end="\n")


def _replace_runs(path: Path, seed: int, methods: set[str], rows: list[dict]) -> None:
    """Write ``rows`` as the rows of ``seed``'s runs of ``methods`` in ``path``, keeping every
    other run's rows: a run is scored on its own, so one method can be rerun (after a fix)
    without the other methods' runs, which need not be kept once scored."""
    kept = [r for r in read_csv(path) if int(r["seed"]) != seed or r["method"] not in methods]
    merged = sorted(kept + rows, key=lambda r: (int(r["seed"]), METHODS.index(r["method"])))
    if merged:
        write_csv(path, merged, list(merged[0]), line_end="\n")


def _setup(paths: Paths, method: str) -> dict[str, object]:
    """How the run was set up: threads, planned epochs, batch size (nnU-Net: stock and used)."""
    plan = json.loads(paths.calibration.read_text())[method]
    if method in NNUNET_METHODS:
        plans_file = paths.nnunet / "preprocessed" / NNUNET_DATASET / "nnUNetPlans.json"
        plans = json.loads(plans_file.read_text())["configurations"]
        configuration = plans[NNUNET_METHODS[method]]
        batch, stock = configuration["batch_size"], configuration["medgraft_stock_batch_size"]
    else:
        from medgraft.config.recipes import load_recipe

        batch = stock = load_recipe(RECIPE).train["batch_size"]
    return {"threads": 1, "planned_epochs": plan["epochs"],
            "iterations_per_epoch": plan["iterations_per_epoch"], "batch_size": batch,
            "stock_batch_size": stock}  # fmt: skip


def _machine_columns() -> dict[str, str]:
    keep = ("cpu", "cores", "python", "torch", "medgraft", "commit", "date")
    return {k: v for k, v in machine().items() if k in keep}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["prepare", "calibrate", "train", "score"])
    parser.add_argument("--method", choices=METHODS, action="append")
    parser.add_argument(
        "--seed", type=int, default=0,
        help="replicate to train or score: medgraft's --seed; nnU-Net seeds nothing, so its "
        "replicates are fresh runs",
    )  # fmt: skip
    parser.add_argument("--work", type=Path, default=CHECKOUT / "runs" / "learning_speed")
    parser.add_argument("--results", type=Path, default=CHECKOUT / "docs" / "results")
    parser.add_argument(
        "--nnunet-python", type=Path, default=CHECKOUT / ".venv-nnunet" / "bin" / "python",
        help="python of the virtual environment nnunetv2 is installed in",
    )  # fmt: skip
    args = parser.parse_args()
    paths = Paths(args.work.resolve(), args.results.resolve(), args.nnunet_python, args.seed)
    if args.step == "prepare":
        prepare(paths)
    elif args.step == "calibrate":
        calibrate(paths)
    elif args.step == "train":
        for method in args.method or TRAINED_BY_DEFAULT:
            if paths.snapshot(method, POINTS_MIN[-1]).exists():
                print(f"{method}: finished, skipped", flush=True)
            elif method in NNUNET_METHODS:
                train_nnunet(paths, method, POINTS_MIN)
            else:
                train_medgraft(paths, method, POINTS_MIN)
    else:
        score(paths)
