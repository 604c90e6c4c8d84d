"""``medgraft crossval``: every fold trained and its validation cases scored by its final model,
reruns that skip what is done and refuse changed options, and ``medgraft compare`` of two
cross-validations paired by case. Also the lab's ablations, which are data read by it."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import invoke

from medgraft import crossval
from medgraft.config.loading import options_sha256
from medgraft.config.resolve import run_folder
from medgraft.config.schema import TrainConfig
from medgraft.errors import MedgraftError
from medgraft.files import read_csv, write_csv
from medgraft.lab.ablations import ABLATIONS_FILE, load_ablations
from medgraft.lab.accuracy_cv import ABLATIONS, DATASETS, FOLDS

TRAINING = ["--epochs", "1", "--batch-size", "16", "--offline"]


def crossval_args(data: Path, output: Path, *extra: str) -> list:
    return ["crossval", "--data", data, "--output", output, "--folds", "2", *TRAINING, *extra]


@pytest.fixture(scope="module")
def finished_crossval(micro_msd: Path, runner, tmp_path_factory) -> Path:
    """A 2-fold cross-validation of the four micro cases, one epoch per fold."""
    output = tmp_path_factory.mktemp("crossval") / "cv"
    result = invoke(runner, *crossval_args(micro_msd, output))
    assert result.exit_code == 0, result.output
    return output


@pytest.mark.slow
def test_every_fold_is_trained_scored_and_summarised(finished_crossval: Path):
    splits = json.loads((finished_crossval / "splits.json").read_text())
    cases = read_csv(finished_crossval / "cases.csv")
    for fold in (0, 1):
        scored = {r["case"] for r in cases if r["fold"] == str(fold)}
        assert scored == set(splits["folds"][fold]["val"])  # by the model that left them out
    assert len(cases) == 4 * 2  # each case once, per class
    assert {r["class"] for r in cases} == {"Anterior", "Posterior"}
    assert all({"dice", "hd95", "nsd"} <= set(r) for r in cases)
    folds = read_csv(finished_crossval / "folds.csv")
    assert [r["fold"] for r in folds] == ["0", "1"]
    for row in folds:
        config = json.loads((finished_crossval / f"fold_{row['fold']}" / "config.json").read_text())
        assert row["options_sha256"] == config["options_sha256"]
        assert float(row["seconds"]) > 0 and row["calls"] == "1" and row["cpu"]
        assert row["checkpoint"] == "last.pt" and row["shared"] in ("yes", "no")
    summary = (finished_crossval / "summary.md").read_text()
    assert "| Anterior | 4 |" in summary and "| mean foreground | 4 |" in summary
    assert "medgraft crossval" in summary  # the command that made it


@pytest.mark.slow
def test_a_rerun_skips_finished_folds_and_refuses_changed_options(
    finished_crossval: Path, micro_msd: Path, runner, monkeypatch
):
    def must_not_train(config: TrainConfig) -> None:
        raise AssertionError(f"retrained {config.output}")

    monkeypatch.setattr(crossval, "run_training", must_not_train)
    monkeypatch.setattr(crossval, "run_batch", lambda *args: pytest.fail("predicted again"))
    before = (finished_crossval / "cases.csv").read_text()
    rerun = invoke(runner, *crossval_args(micro_msd, finished_crossval))
    assert rerun.exit_code == 0, rerun.output
    assert "fold 1: finished, skipped" in rerun.output
    assert (finished_crossval / "cases.csv").read_text() == before
    changed = invoke(runner, *crossval_args(micro_msd, finished_crossval, "--lr", "0.01"))
    assert changed.exit_code != 0
    message = str(changed.exception)
    assert "fold_0: trained with other training options" in message and "--redo-changed" in message
    assert (finished_crossval / "fold_0" / "last.pt").is_file()  # nothing lost


def trained_like(finished: Path, calls: list[TrainConfig]):
    """A stand-in trainer that records its configs and leaves the run as training would, with
    the model of the same fold of ``finished`` (the fixture trained for real)."""

    def train(config: TrainConfig) -> None:
        calls.append(config)
        run = run_folder(config)
        assert not (run / "last.pt").exists()  # the run of other options went first
        for name in ("last.pt", "metrics.csv"):
            shutil.copy(finished / run.name / name, run / name)
        saved = {"options_sha256": options_sha256(config), "train_config": asdict(config)}
        (run / "config.json").write_text(json.dumps(saved))

    return train


@pytest.mark.slow
def test_redo_changed_retrains_and_compare_pairs_the_two_by_case(
    finished_crossval: Path, micro_msd: Path, runner, tmp_path: Path, monkeypatch
):
    changed = tmp_path / "cv-lr"
    shutil.copytree(finished_crossval, changed, symlinks=True)
    calls: list[TrainConfig] = []
    monkeypatch.setattr(crossval, "run_training", trained_like(finished_crossval, calls))
    result = invoke(
        runner, *crossval_args(micro_msd, changed, "--lr", "0.0001", "--redo-changed")
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [(c.fold, c.lr, c.overwrite, c.resume) for c in calls] == [
        (0, 0.0001, True, False), (1, 0.0001, True, False)
    ]  # fmt: skip
    folds = read_csv(changed / "folds.csv")
    assert [r["options_sha256"] for r in folds] == [options_sha256(c) for c in calls]
    assert all(r["calls"] == "1" for r in folds)  # the earlier options' time is not added
    assert len(read_csv(changed / "cases.csv")) == 8  # scored again, by the new runs
    compared = invoke(runner, "compare", finished_crossval, changed)
    assert compared.exit_code == 0, compared.output
    assert "mean foreground" in compared.output
    assert "not distinguishable" in compared.output  # the same models: no difference


def test_an_interrupted_run_is_resumed_and_a_finished_one_skipped(micro_msd: Path, tmp_path):
    plan = crossval.CrossvalPlan(tmp_path, {"data": str(micro_msd), "epochs": 2}, folds=2)
    configs = plan.fold_configs()
    for fold, epochs_done in ((0, 1), (1, 2)):
        [config] = configs[fold]
        run = tmp_path / f"fold_{fold}"
        run.mkdir()
        saved = {"options_sha256": options_sha256(config), "train_config": {"epochs": 2}}
        (run / "config.json").write_text(json.dumps(saved))
        (run / "last.pt").touch()
        write_csv(run / "metrics.csv", [{"epoch": e} for e in range(epochs_done)], ["epoch"])
    [job] = crossval.training_jobs(configs, redo_changed=False)
    assert (job.fold, job.config.resume, job.config.overwrite) == (0, True, False)


def test_the_views_of_a_fold_share_the_cross_validations_split(micro_msd: Path, tmp_path):
    flags = {"data": str(micro_msd), "views": "axial,sagittal"}
    plan = crossval.CrossvalPlan(tmp_path, flags, folds=2)
    configs = plan.fold_configs()
    assert [(c.fold, c.slice_axis) for runs in configs.values() for c in runs] == [
        (0, "axial"), (0, "sagittal"), (1, "axial"), (1, "sagittal")
    ]  # fmt: skip
    crossval.share_split(tmp_path, configs, 2)
    split = (tmp_path / "splits.json").read_text()
    assert (tmp_path / "axial" / "splits.json").read_text() == split
    assert (tmp_path / "sagittal" / "splits.json").read_text() == split
    assert len(crossval.training_jobs(configs, redo_changed=False)) == 4


def _cases(folder: Path, dice: dict[str, float]) -> Path:
    """A cross-validation folder whose ``cases.csv`` holds these Dice per case (two classes)."""
    rows = [
        {"fold": 0, "case": case, "class": name, "dice": value, "hd95": 1.0, "nsd": value}
        for case, value in dice.items()
        for name in ("Anterior", "Posterior")
    ]
    write_csv(folder / "cases.csv", rows, crossval.CASE_COLUMNS)
    return folder


def test_compare_says_ahead_behind_or_not_distinguishable(tmp_path: Path, runner):
    rng = np.random.default_rng(0)
    base = {f"case{i}": 0.8 + rng.uniform(-0.02, 0.02) for i in range(20)}
    low = _cases(tmp_path / "low", base)
    high = _cases(tmp_path / "high", {c: v + 0.05 for c, v in base.items()})
    noise = _cases(tmp_path / "noise", {c: v + rng.uniform(-0.01, 0.01) for c, v in base.items()})
    [anterior, _, mean] = crossval.compare_folders(high, low)
    assert (anterior.cases, anterior.difference.verdict) == (20, "ahead")
    assert mean.name == "mean foreground" and mean.difference.mean == pytest.approx(0.05)
    assert crossval.compare_folders(low, high)[-1].difference.verdict == "behind"
    assert crossval.compare_folders(noise, low)[-1].difference.verdict == "not distinguishable"
    result = invoke(runner, "compare", high, low, "--metric", "nsd")
    assert result.exit_code == 0, result.output
    assert "ahead" in result.output and "NSD" in result.output


def test_compare_refuses_folders_that_share_no_case(tmp_path: Path, runner):
    first = _cases(tmp_path / "a", {"case1": 0.8})
    other = _cases(tmp_path / "b", {"other1": 0.8})
    result = invoke(runner, "compare", first, other)
    assert result.exit_code != 0
    assert "share no case" in str(result.exception)
    with pytest.raises(MedgraftError, match=r"missing[/\\]cases.csv: not found"):
        crossval.compare_folders(first, tmp_path / "missing")


def test_the_ablations_name_known_options_of_their_datasets_recipes():
    names = {f.name for f in TrainConfig.__dataclass_fields__.values()}
    assert len(ABLATIONS) >= 20
    for ablation in ABLATIONS.values():
        assert set(ablation.change) <= names, ablation.name
        # the dataset's recipe, or another design measured on the same dataset (a 3D model)
        assert ablation.recipe == DATASETS[ablation.dataset]["recipe"] or ablation.name.startswith(
            "3d-"
        )
        assert ablation.summary and ablation.why
        assert not ablation.baseline or ablation.baseline in ABLATIONS


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"change": {"los": "dice_ce"}}, r"unknown option 'axial-only.change.los'"),
        ({"change": {"loss": "dice"}}, r"axial-only: unknown loss --loss 'dice'"),
        ({"recipe": "mri-4d"}, "unknown recipe 'mri-4d'"),
        ({"dataset": "retina"}, "unknown dataset 'retina'"),
        ({"folds": [7]}, "folds must list folds of 0 .. 4"),
        ({"baseline": "nowhere"}, "baseline 'nowhere' is no ablation here"),
        ({"note": "x"}, r"unknown key\(s\) note"),
    ],
)
def test_a_wrong_ablation_is_refused_naming_the_file_and_entry(
    tmp_path: Path, edit: dict, message: str
):
    entries = yaml.safe_load(ABLATIONS_FILE.read_text())
    entries["axial-only"] |= edit
    path = tmp_path / "ablations.yaml"
    path.write_text(yaml.safe_dump(entries))
    recipes = {name: d["recipe"] for name, d in DATASETS.items()}
    with pytest.raises(MedgraftError, match=message) as refused:
        load_ablations(recipes, FOLDS, path)
    assert str(path) in str(refused.value)


def test_crossval_takes_trains_options_but_those_it_sets_itself(runner):
    result = invoke(runner, "crossval", "--help")
    assert result.exit_code == 0, result.output
    assert "--lr" in result.output and "--recipe" in result.output
    assert "--redo-changed" in result.output and "[default: 5]" in result.output
    for flag in ("--resume", "--overwrite", "--split-file", "--val-fraction"):
        assert flag not in result.output, flag
