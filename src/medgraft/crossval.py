"""Cross-validation of a recipe: every fold (and every view of a ``views`` recipe) trained, each
fold's validation cases segmented by that fold's final model (``last.pt``, its views averaged)
through the predict path and scored at their own resolution, and the whole summarised with
bootstrap intervals over cases.

The trainings are a list of independent jobs (:class:`TrainJob`, one per fold and view), each
a ``medgraft crossval-train --job RUN/crossval_job.yaml`` command line of a launcher
(``medgraft.launchers``): here in turn (``--launcher local``, the default), or as one Slurm job
array (``--launcher slurm``; ``--no-wait`` returns at once and the same command later scores
what finished). The job itself times its training into the run's ``wall.json``, so a fold's
wall time is the same record wherever it trained.

The folder (``--output``) holds what ``medgraft train --folds K --fold all`` writes there
(``fold_k/``, or ``<view>/fold_k/``, and ``splits.json``), so ``medgraft predict --model OUT``
ensembles it, and beside that:

- per run, ``wall.json``: its training calls' wall time, machine, versions and the cores other
  jobs used meanwhile (``wall.running.json`` while a call runs; a killed call's is added to the
  next call's record);
- per fold, in its scoring folder (``fold_k/``, or ``views_fold_k/`` beside the views):
  ``val_images/`` (links to the validation scans), ``predictions-<variant>/`` and the scores,
  kept with the models that gave them so a rerun scores only what is new;
- ``cases.csv`` (fold, case, class: every registered metric), ``folds.csv`` (per fold: options
  fingerprint, wall time, machine, versions, load), ``plan.json`` and ``summary.md``.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from medgraft.config.loading import load_saved_config, options_sha256, save_config
from medgraft.config.resolve import run_folder, train_configs
from medgraft.config.reuse import reuse_finished_run
from medgraft.config.schema import CrossvalOptions, PredictOptions, TrainConfig
from medgraft.data.discovery import discover_dataset
from medgraft.data.splits import fold_split
from medgraft.errors import MedgraftError
from medgraft.evaluation.evaluate import evaluate_folders
from medgraft.evaluation.metrics import METRICS
from medgraft.evaluation.stats import RESAMPLES, Interval, difference_interval, mean_interval
from medgraft.files import atomic_write_text, read_csv, write_csv
from medgraft.inference.batch import input_cases, run_batch
from medgraft.launchers import Job, Launcher
from medgraft.provenance import Heartbeat, Measurement, machine, shared
from medgraft.runtime import console
from medgraft.training.trainer import run_training

JOB_FILE = "crossval_job.yaml"
"""A training job's exact options, in its run folder: what ``medgraft crossval-train`` reads."""
HEARTBEAT = "wall.running.json"
"""A training call's time so far, rewritten every 30 s; left behind only by a killed call."""
WALL = "wall.json"
RECIPE_VARIANT = "recipe"
"""Scores of the models' own prediction settings (their recipe's TTA and clean-up)."""
CASE_COLUMNS = ["fold", "case", "class", *METRICS.names()]
FOLD_COLUMNS = [
    "fold", "cases", "epochs", "checkpoint", "options_sha256", "seconds", "calls",
    "other_jobs_cores", "shared", "cpu", "cores", "gpu", "python", "torch", "medgraft",
    "commit", "date",
]  # fmt: skip
MEAN_FOREGROUND = "mean foreground"
"""The row of each case's mean over its classes (those its truth holds)."""


@dataclass(frozen=True)
class CrossvalPlan:
    """What to cross-validate: the training options given (``flags``, nested as the schema
    nests them, ``data`` among them), the recipe and config file under them, and the folds."""

    output: Path
    flags: dict[str, Any]
    recipe: str | None = None
    config_file: Path | None = None
    folds: int = CrossvalOptions.folds
    redo_changed: bool = CrossvalOptions.redo_changed
    command: str = ""

    def fold_configs(self) -> dict[int, list[TrainConfig]]:
        """Each fold's runs (one, or one per view), as ``medgraft train --folds K --fold all``
        trains them into the folder."""
        from medgraft.runtime import is_cuda

        flags = {**self.flags, "output": str(self.output), "folds": self.folds}
        # on a CUDA device under the recipe's cuda profile, as `medgraft train` trains
        configs = train_configs(
            flags, recipe=self.recipe, config_file=self.config_file, fold="all", on_cuda=is_cuda
        )
        by_fold: dict[int, list[TrainConfig]] = {}
        for config in configs:
            by_fold.setdefault(config.fold, []).append(config)
        return by_fold


@dataclass(frozen=True)
class TrainJob:
    """One training of the cross-validation, a fold or a view of a fold: independent of the
    others, so a launcher may run it wherever the folder is seen."""

    fold: int
    config: TrainConfig
    fingerprint: str
    """The options fingerprint asked for (``options_sha256``): recorded with its wall time."""

    @property
    def run(self) -> Path:
        return run_folder(self.config)


FINISHED, STARTED, NEW = "finished", "started", "new"


def run_state(run: Path, asked_for: str, redo_changed: bool) -> str:
    """``finished`` (every epoch its options ask for), ``started`` (a ``last.pt`` to resume
    from) or ``new``. A run of other options is never reused silently: refused, or with
    ``redo_changed`` deleted to be trained anew."""
    saved = run / "config.json"
    if saved.exists():
        config = json.loads(saved.read_text())
        trained_with = config.get("options_sha256")
        asked_by = "this cross-validation"
        if not reuse_finished_run(
            run, trained_with, asked_for, redo_changed=redo_changed, asked_by=asked_by
        ):
            shutil.rmtree(run)
            return NEW
        epochs = config["train_config"]["epochs"]
        if (run / "last.pt").exists() and len(read_csv(run / "metrics.csv")) >= epochs:
            return FINISHED
    return STARTED if (run / "last.pt").exists() else NEW


def fold_finished(runs: list[TrainConfig], redo_changed: bool = False) -> bool:
    states = [run_state(run_folder(c), options_sha256(c), redo_changed) for c in runs]
    return all(state == FINISHED for state in states)


def training_jobs(configs: dict[int, list[TrainConfig]], redo_changed: bool) -> list[TrainJob]:
    """The trainings still to do; an interrupted one continues from its ``last.pt``."""
    jobs = []
    for fold, runs in configs.items():
        for config in runs:
            fingerprint = options_sha256(config)
            state = run_state(run_folder(config), fingerprint, redo_changed)
            if state != FINISHED:
                resume = state == STARTED
                job = replace(config, resume=resume, overwrite=not resume)
                jobs.append(TrainJob(fold, job, fingerprint))
    return jobs


def share_split(output: Path, configs: dict[int, list[TrainConfig]], folds: int) -> None:
    """One split for every run: ``OUT/splits.json`` (written now, or checked against the
    data), copied into each view's folder that lacks one, so the views of a fold (wherever
    they train) validate the same cases; a view's split found alone is taken up first."""
    runs = [config for fold_runs in configs.values() for config in fold_runs]
    shared_split = output / "splits.json"
    kept = [
        Path(c.output) / "splits.json" for c in runs if (Path(c.output) / "splits.json").exists()
    ]
    if not shared_split.exists() and kept:
        output.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kept[0], shared_split)
    first = runs[0]
    spec = discover_dataset(first.data, first.labels_dir, first.roi_dir)
    fold_split(spec.training, output, folds, 0, first.seed)
    for config in runs:
        split = Path(config.output) / "splits.json"
        if not split.exists():
            split.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shared_split, split)


def run_job(job: TrainJob) -> None:
    """Train one job; its wall time and the cores other jobs used meanwhile are added to the
    run's ``wall.json``, and a heartbeat keeps them should the call be killed."""
    run = job.run
    views = f", view {job.config.slice_axis}" if job.config.views else ""
    action = "continuing" if job.config.resume else "training"
    console.print(f"fold {job.fold}{views}: {action} in {run}")
    count_killed_call(run, job.fingerprint)
    run.mkdir(parents=True, exist_ok=True)
    beat = {"options_sha256": job.fingerprint}
    with Measurement() as measured, Heartbeat(measured, run / HEARTBEAT, extra=beat):
        run_training(job.config)
    add_wall_time(run, job.fingerprint, measured.seconds, measured.other_jobs_cores)


def run_jobs(jobs: list[TrainJob]) -> None:
    """Run the jobs here, one after the other (the lab's way, without a launcher)."""
    for job in jobs:
        run_job(job)


def run_job_file(path: Path) -> None:
    """``medgraft crossval-train``: the job :func:`launcher_job` saved at ``path``."""
    config = TrainConfig(**load_saved_config(Path(path)))
    run_job(TrainJob(config.fold, config, options_sha256(config)))


def launcher_job(job: TrainJob) -> Job:
    """``job`` as a launcher's command line, its options saved in the run folder (some have
    no flag); finished once the run holds every epoch of those options."""
    job_file = job.run / JOB_FILE
    job.run.mkdir(parents=True, exist_ok=True)
    save_config(job.config, job_file)
    return Job(
        f"fold_{job.fold}" + (f"-{job.config.slice_axis}" if job.config.views else ""),
        ["crossval-train", "--job", str(job_file.resolve())],
        lambda: run_finished(job.run, job.fingerprint),
    )


def run_finished(run: Path, fingerprint: str) -> bool:
    """Whether ``run`` holds a ``last.pt`` and every epoch of a training of ``fingerprint``'s
    options (as :func:`run_state` says ``finished``, without its deleting or refusing)."""
    saved, metrics = run / "config.json", run / "metrics.csv"
    if not (saved.exists() and metrics.exists() and (run / "last.pt").exists()):
        return False
    config = json.loads(saved.read_text())
    epochs = config["train_config"]["epochs"]
    return config.get("options_sha256") == fingerprint and len(read_csv(metrics)) >= epochs


def planned_training(
    plan: CrossvalPlan, folds: list[int] | None = None
) -> tuple[dict[int, list[TrainConfig]], list[TrainJob]]:
    """The runs of ``folds`` (default: all) and the trainings still missing of them."""
    configs = plan.fold_configs()
    configs = {f: c for f, c in configs.items() if folds is None or f in folds}
    share_split(plan.output, configs, plan.folds)
    jobs = training_jobs(configs, plan.redo_changed)
    for fold in sorted(set(configs) - {job.fold for job in jobs}):
        console.print(f"fold {fold}: finished, skipped")
    return configs, jobs


def train_folds(
    plan: CrossvalPlan,
    folds: list[int] | None = None,
    run: Callable[[list[TrainJob]], None] = run_jobs,
) -> dict[int, list[TrainConfig]]:
    """Train what is missing of ``folds`` (default: all) with ``run``; returns their runs."""
    configs, jobs = planned_training(plan, folds)
    run(jobs)
    return configs


def fold_folder(output: Path, fold: int, runs: list[Path]) -> Path:
    """Where a fold's validation predictions and scores are kept: its run folder, or for a
    ``views`` recipe a folder beside the views' (not ``fold_k``, so ``medgraft predict
    --model <output>`` still finds only the views)."""
    single = output / f"fold_{fold}"
    return single if runs == [single] else output / f"views_fold_{fold}"


def fold_cases(output: Path, fold: int) -> list[str]:
    splits = json.loads((output / "splits.json").read_text())
    return splits["folds"][fold]["val"]


def score_fold(
    output: Path,
    fold: int,
    runs: list[TrainConfig],
    options: PredictOptions | None = None,
    variant: str = RECIPE_VARIANT,
) -> list[dict]:
    """Per-case scores (:data:`CASE_COLUMNS`) of the fold's validation cases, segmented by the
    fold's final models (``last.pt``: those cases choose no checkpoint; the views averaged)
    through the predict path with ``options`` (default: the models' own settings) and scored
    at the images' own resolution. Kept in ``cases-<variant>.json`` with the models that gave
    them: a rerun scores only folds that are new or retrained."""
    paths = [run_folder(config) for config in runs]
    models = [path / "last.pt" for path in paths]
    folder = fold_folder(output, fold, paths)
    folder.mkdir(parents=True, exist_ok=True)
    scores, scored_by = folder / f"cases-{variant}.json", folder / f"cases-{variant}.models.json"
    newest_model = max(model.stat().st_mtime for model in models)
    # scores written before the list was kept are trusted on their time alone
    before = json.loads(scored_by.read_text()) if scored_by.exists() else None
    if (
        scores.exists()
        and scores.stat().st_mtime > newest_model
        and before in (None, [str(model) for model in models])
    ):
        return json.loads(scores.read_text())
    evaluation = _predict_and_score(
        folder, fold_cases(output, fold), models, runs[0], options, variant
    )
    rows = [
        {
            "fold": fold,
            "case": row["case_id"],
            "class": class_name,
            **{metric: f"{row[f'{metric}_{class_name}']:.5f}" for metric in METRICS},
        }
        for row in evaluation.rows
        for class_name in evaluation.label_names.values()
    ]
    atomic_write_text(scores, json.dumps(rows, indent=1))
    atomic_write_text(scored_by, json.dumps([str(model) for model in models]))
    return rows


def _predict_and_score(
    folder: Path,
    cases: list[str],
    models: list[Path],
    config: TrainConfig,
    options: PredictOptions | None,
    variant: str,
):
    """Segment ``cases`` of the run's data with ``models`` and score them against their truth
    (inside the run's regions of interest, stray labels as the run treated them)."""
    spec = discover_dataset(config.data, config.labels_dir, config.roi_dir)
    wanted = set(cases)
    records = [r for r in spec.training if r.case_id in wanted]
    inputs = folder / "val_images"
    inputs.mkdir(exist_ok=True)
    for channel in (path for record in records for path in record.channels):
        link = inputs / channel.name  # every channel file: predict finds _0001 … beside _0000
        if not link.exists():
            link.symlink_to(channel.resolve())
    predictions = folder / f"predictions-{variant}"
    if predictions.exists():
        shutil.rmtree(predictions)  # masks of an earlier model of this fold: predict again
    report = run_batch(models, input_cases(inputs), predictions, options or PredictOptions())
    if report.count("failed"):
        raise MedgraftError(
            f"{predictions}: {report.count('failed')} validation case(s) failed to segment "
            f"(see {report.summary})"
        )
    return evaluate_folders(
        predictions,
        Path(records[0].label).parent,
        spec.labels,
        cases=sorted(wanted),
        stray_to_background=config.stray_labels_to_background,
        roi_mask=Path(config.data) / config.roi_dir if config.roi_dir else None,
    )


def fold_fingerprint(runs: dict[Path, str]) -> str:
    """The fingerprints of a fold's runs as one, whatever order the views come in."""
    return "+".join(sorted(runs.values()))


def count_killed_call(folder: Path, fingerprint: str) -> None:
    """Add a killed call's time, from the heartbeat it left, to ``folder``'s ``wall.json``;
    a heartbeat of other options (a recipe since changed) is dropped."""
    heartbeat = folder / HEARTBEAT
    if heartbeat.exists():
        spent = json.loads(heartbeat.read_text())
        if spent.get("options_sha256") == fingerprint:
            add_wall_time(
                folder, fingerprint, spent["seconds"], spent["other_jobs_cores"], killed=True
            )
        heartbeat.unlink()


def add_wall_time(
    folder: Path, fingerprint: str, seconds: float, other_jobs_cores: float, killed: bool = False
) -> None:
    """Sum the training calls of a run (an interrupted one takes several) in ``wall.json``;
    the other jobs' cores are averaged over the calls' wall time. A ``killed`` call counts up
    to its last heartbeat (at most 30 s short); the machine and versions are those of the
    latest call. Times of other options (a recipe since changed) start anew."""
    path = folder / WALL
    done = json.loads(path.read_text()) if path.exists() else {}
    if done and _timed_fingerprint(folder, done) != fingerprint:
        done = {}
    done = {"seconds": 0.0, "calls": 0, **done}
    other_core_seconds = done.get("other_jobs_cores", 0.0) * done["seconds"]
    total = done["seconds"] + seconds
    record = {
        **machine(),
        "options_sha256": fingerprint,
        "seconds": total,
        "calls": done["calls"] + 1,
        "killed_calls": done.get("killed_calls", 0) + killed,
        "other_jobs_cores": (other_core_seconds + other_jobs_cores * seconds) / total,
    }
    atomic_write_text(path, json.dumps(record, indent=1))


def _timed_fingerprint(folder: Path, wall: dict) -> str:
    """The options the times in ``wall`` were spent on; files written before they said so
    belong to the single run in the folder."""
    if "options_sha256" in wall:
        return wall["options_sha256"]
    config = folder / "config.json"
    return json.loads(config.read_text())["options_sha256"] if config.exists() else ""


def fold_wall_time(fold: Path, runs: dict[Path, str]) -> dict | None:
    """The time the fold's runs took: each run's ``wall.json``, plus what was timed for the
    fold as a whole in its scoring folder (the lab timed a ``views`` fold's call there); times
    spent on other options are left out, and the other jobs' cores are averaged over the
    total. None when no time was recorded (runs trained by ``medgraft train``)."""
    timed = {fold: fold_fingerprint(runs)} | {run: sha for run, sha in runs.items() if run != fold}
    walls = []
    for folder, fingerprint in timed.items():
        path = folder / WALL
        wall = json.loads(path.read_text()) if path.exists() else {}
        if wall and _timed_fingerprint(folder, wall) == fingerprint:
            walls.append(wall)
    if not walls:
        return None
    seconds = sum(w["seconds"] for w in walls)
    return {
        **walls[-1],
        "seconds": seconds,
        "calls": sum(w["calls"] for w in walls),
        "other_jobs_cores": sum(w["other_jobs_cores"] * w["seconds"] for w in walls) / seconds,
    }


def fold_record(output: Path, fold: int, runs: list[Path]) -> dict:
    """A row of ``folds.csv``: the fold's options fingerprints (one per run, a view each for
    a ``views`` recipe, joined by ``+``), wall time, machine, versions and load."""
    saved = [json.loads((run / "config.json").read_text()) for run in runs]
    fingerprints = {run: config["options_sha256"] for run, config in zip(runs, saved, strict=True)}
    wall = fold_wall_time(fold_folder(output, fold, runs), fingerprints)
    timing = (
        {}
        if wall is None
        else {
            **wall,
            "seconds": f"{wall['seconds']:.1f}",
            "other_jobs_cores": f"{wall['other_jobs_cores']:.2f}",
            "shared": shared(wall["other_jobs_cores"]),
        }
    )
    return {
        **timing,
        "fold": fold,
        "cases": len(fold_cases(output, fold)),
        "epochs": saved[0]["train_config"]["epochs"],
        "checkpoint": "last.pt",
        "options_sha256": "+".join(fingerprints.values()),
    }


def run_crossval(plan: CrossvalPlan, launcher: Launcher | None = None) -> str | None:
    """Train what is missing (as jobs of ``launcher``; none: here, in turn), score every fold,
    write ``cases.csv``, ``folds.csv``, ``plan.json`` and ``summary.md``; returns the summary,
    or None while Slurm jobs are still pending or running (``--no-wait``)."""
    configs, jobs = planned_training(plan)
    if launcher is None:
        run_jobs(jobs)
    elif jobs:
        launched = launcher.run([launcher_job(job) for job in jobs])
        launched.raise_failures()
        if launched.waiting:
            return None
    cases, folds = [], []
    for fold, runs in sorted(configs.items()):
        folds.append(fold_record(plan.output, fold, [run_folder(c) for c in runs]))
        cases += score_fold(plan.output, fold, runs)
    write_csv(plan.output / "cases.csv", cases, CASE_COLUMNS)
    write_csv(plan.output / "folds.csv", folds, FOLD_COLUMNS)
    first = configs[min(configs)][0]
    record = {
        "data": first.data,
        "recipe": plan.recipe or "",
        "folds": plan.folds,
        "views": ",".join(c.slice_axis for c in configs[min(configs)]),
        "command": plan.command,
    }
    atomic_write_text(plan.output / "plan.json", json.dumps(record, indent=1) + "\n")
    return write_summary(plan.output)


@dataclass
class ClassScores:
    """One class's per-case values of one metric (NaN: the class is absent from the truth)."""

    name: str
    values: dict[str, float] = field(default_factory=dict)

    def finite(self) -> np.ndarray:
        return np.array([v for v in self.values.values() if math.isfinite(v)])

    def missed(self) -> int:
        return sum(math.isinf(v) for v in self.values.values())


def class_scores(rows: list[dict], metric: str) -> list[ClassScores]:
    """Per class, then the cases' mean over their classes: ``{case: value}`` of ``metric``."""
    classes: dict[str, ClassScores] = {}
    for row in rows:
        scores = classes.setdefault(row["class"], ClassScores(row["class"]))
        scores.values[row["case"]] = float(row[metric])
    cases = dict.fromkeys(case for scores in classes.values() for case in scores.values)
    mean = ClassScores(MEAN_FOREGROUND)
    for case in cases:
        values = [s.values[case] for s in classes.values() if case in s.values]
        finite = [v for v in values if not math.isnan(v)]
        mean.values[case] = float(np.mean(finite)) if finite else math.nan
    return [*classes.values(), mean]


def _interval_text(scores: ClassScores, decimals: int = 3) -> str:
    values = scores.finite()
    if not values.size:
        return "-"
    interval = mean_interval(values)
    return (
        f"{interval.mean:.{decimals}f} [{interval.low:.{decimals}f}, {interval.high:.{decimals}f}]"
    )


def write_summary(folder: Path) -> str:
    """``summary.md`` of a cross-validation folder, from its ``plan.json``, ``cases.csv`` and
    ``folds.csv`` alone (so it can be written again from them); returns it."""
    plan = json.loads((folder / "plan.json").read_text())
    cases, folds = read_csv(folder / "cases.csv"), read_csv(folder / "folds.csv")
    per_metric = {metric: class_scores(cases, metric) for metric in METRICS}
    count = len({row["case"] for row in cases})
    recipe = f"recipe `{plan['recipe']}`" if plan["recipe"] else "medgraft's default options"
    views = plan["views"].split(",")
    lines = [
        "# Cross-validation",
        "",
        f"Data: `{plan['data']}`; {recipe}; {plan['folds']} folds, each of the {count} cases "
        "validated once, by the final (`last.pt`) model of the fold that held it out"
        + (f", its {len(views)} views ({', '.join(views)}) averaged" if len(views) > 1 else "")
        + ".",
    ]
    if plan["command"]:
        lines += ["", f"Command: `{plan['command']}`"]
    lines += [
        "",
        "Mean over the validation cases with its 95% bootstrap interval (cases resampled, "
        f"{RESAMPLES} draws). A class absent from a case's truth is left out of that case; HD95 "
        "(mm, pixels for 2D images) is averaged over the cases where the class was found, those "
        "where it was missed are counted apart. Per case in [cases.csv](cases.csv).",
        "",
        "| class | cases | " + " | ".join(METRICS.get(m).title for m in METRICS) + " | missed |",
        "| --- | --- |" + " --- |" * len(METRICS) + " --- |",
    ]
    for index, scores in enumerate(per_metric["dice"]):
        cells = [_interval_text(per_metric[m][index], METRICS.get(m).decimals) for m in METRICS]
        missed = per_metric["hd95"][index].missed() if "hd95" in per_metric else 0
        cells = cells if scores.name != MEAN_FOREGROUND else [cells[0], *["-"] * (len(cells) - 1)]
        missed_cell = str(missed) if scores.name != MEAN_FOREGROUND else "-"
        row = [scores.name, str(scores.finite().size), *cells, missed_cell]
        lines.append("| " + " | ".join(row) + " |")
    lines += _fold_lines(cases, folds)
    text = "\n".join(lines) + "\n"
    atomic_write_text(folder / "summary.md", text)
    return text


def _fold_lines(cases: list[dict], folds: list[dict]) -> list[str]:
    lines = [
        "",
        "Per fold ([folds.csv](folds.csv): options fingerprint, machine, versions):",
        "",
        "| fold | cases | mean Dice | training minutes | other jobs' cores |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in folds:
        rows = [r for r in cases if r["fold"] == row["fold"]]
        mean = class_scores(rows, "dice")[-1].finite()
        minutes = f"{float(row['seconds']) / 60:.1f}" if row.get("seconds") else "not recorded"
        cores = row.get("other_jobs_cores") or "-"
        dice = f"{mean.mean():.3f}" if mean.size else "-"
        lines.append(f"| {row['fold']} | {row['cases']} | {dice} | {minutes} | {cores} |")
    return lines


@dataclass(frozen=True)
class Comparison:
    """One class (or the mean over classes) of two cross-validations, paired by case."""

    name: str
    cases: int
    first: float
    second: float
    difference: Interval


def compare_folders(first: Path, second: Path, metric: str = "dice") -> list[Comparison]:
    """``first`` against ``second`` (two cross-validation folders, their ``cases.csv``): per
    class and for the cases' mean over classes, the mean difference over the cases both
    scored, with a paired bootstrap interval; a case absent from a class's truth is left
    out of that class."""
    rows = []
    for folder in (first, second):
        path = folder / "cases.csv"
        if not path.is_file():
            raise MedgraftError(f"{path}: not found; run medgraft crossval --output {folder}")
        rows.append(read_csv(path))
    shared_cases = {r["case"] for r in rows[0]} & {r["case"] for r in rows[1]}
    if not shared_cases:
        raise MedgraftError(
            f"{first / 'cases.csv'} and {second / 'cases.csv'} share no case: "
            "compare cross-validations of the same data"
        )
    found = []
    theirs = {s.name: s for s in class_scores(rows[1], metric)}
    for mine in class_scores(rows[0], metric):
        other = theirs.get(mine.name)
        if other is None:
            continue
        paired = [
            case
            for case in sorted(shared_cases)
            if math.isfinite(mine.values.get(case, math.nan))
            and math.isfinite(other.values.get(case, math.nan))
        ]
        if not paired:
            continue
        a = np.array([mine.values[c] for c in paired])
        b = np.array([other.values[c] for c in paired])
        found.append(
            Comparison(mine.name, len(paired), a.mean(), b.mean(), difference_interval(a, b))
        )
    return found
