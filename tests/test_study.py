"""``medgraft study``: nested label fractions, one validation set, resumable, honest summary."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke

from medgraft import study
from medgraft.cli import run_command
from medgraft.config.schema import StudyOptions
from medgraft.errors import MedgraftError
from medgraft.launchers import LocalLauncher
from medgraft.study import StudyPlan, fraction_cases, run_study
from medgraft.training.trainer import TrainResult


def study_args(data: Path, output: Path, earlier_run: Path) -> list:
    """3 inits (ImageNet, scratch, an earlier run) x 2 fractions x 1 seed, 2 epochs each."""
    inits = f"imagenet,none,{earlier_run}"
    return ["study", "--data", data, "--output", output, "--inits", inits, "--fractions",
            "0.34,1.0", "--seeds", "1", "--epochs", "2", "--val-fraction", "0.25"]  # fmt: skip


@pytest.fixture(scope="module")
def finished_study(micro_msd: Path, mri_run: Path, runner, tmp_path_factory) -> Path:
    """A real study: 3 inits (ImageNet, scratch, an earlier run) x 2 fractions x 1 seed."""
    output = tmp_path_factory.mktemp("study") / "study"
    result = invoke(runner, *study_args(micro_msd, output, mri_run), "--offline")
    assert result.exit_code == 0, result.output
    return output


def test_fractions_are_nested_subsets_of_one_pool():
    pool = [f"case_{i}" for i in range(20)]
    subsets = [fraction_cases(pool, f) for f in (0.1, 0.25, 0.5, 1.0)]
    assert [len(s) for s in subsets] == [2, 5, 10, 20]
    for smaller, larger in itertools.pairwise(subsets):
        assert set(smaller) < set(larger)
    assert fraction_cases(pool[:3], 0.01) == ["case_0"]  # never zero cases


def test_study_trains_every_combination_on_one_validation_set(finished_study: Path):
    rows = list(csv.DictReader((finished_study / "results.csv").open()))
    assert {(r["init"], r["fraction"]) for r in rows} == {
        (init, fraction)
        for init in ("imagenet", "none", "from-run")
        for fraction in ("0.34", "1.0")
    }
    assert {"final_dice_Anterior", "final_dice_Posterior", "epochs_to_90", "seconds"} <= set(
        rows[0]
    )
    cases = list(csv.DictReader((finished_study / "cases.csv").open()))
    for row in rows:
        run = finished_study / "runs" / f"{row['init']}-f{float(row['fraction']):g}-s0"
        curve = [float(r["val_mean_dice"]) for r in csv.DictReader((run / "metrics.csv").open())]
        assert float(row["final_mean_dice"]) == pytest.approx(curve[-1])  # the last epoch's
        assert 1 <= int(row["epochs_to_90"]) <= int(row["epochs"]) == 2
        # the per-case scores of that last epoch are committed with the study, and are its mean
        mine = [c for c in cases if (c["init"], c["fraction"]) == (row["init"], row["fraction"])]
        assert {c["class"] for c in mine} == {"Anterior", "Posterior"}
        anterior = [float(c["dice"]) for c in mine if c["class"] == "Anterior"]
        assert sum(anterior) / len(anterior) == pytest.approx(float(row["final_dice_Anterior"]))
    split = json.loads((finished_study / "split.json").read_text())
    assert len(split["val"]) == 1 and len(split["pool"]) == 3
    small = json.loads((finished_study / "splits" / "fraction-0.34.json").read_text())
    full = json.loads((finished_study / "splits" / "fraction-1.json").read_text())
    assert small["val"] == full["val"] == split["val"]
    assert set(small["train"]) < set(full["train"]) == set(split["pool"])
    fraction_train = {"0.34": small["train"], "1": full["train"]}
    for run in (finished_study / "runs").iterdir():  # each run trained on its fraction's cases
        config = json.loads((run / "config.json").read_text())
        assert config["val_cases"] == split["val"]
        assert config["train_cases"] == fraction_train[run.name.split("-f")[1].split("-s")[0]]
    run = json.loads((finished_study / "runs" / "from-run-f1-s0" / "config.json").read_text())
    assert run["weights_record"]["encoder"]["origin"] == "init-from"
    scratch = json.loads((finished_study / "runs" / "none-f1-s0" / "config.json").read_text())
    assert scratch["weights_record"]["encoder"]["origin"] == "random"


def test_study_writes_summary_and_plots(finished_study: Path):
    summary = (finished_study / "summary.md").read_text()
    assert "| imagenet |" in summary and "| none |" in summary and "| from-run |" in summary
    assert "Command: `medgraft study --data" in summary
    assert "scratch-at-100%" in summary
    assert "| imagenet | 1 |" in summary  # the difference to scratch at the same fraction
    before = summary
    (finished_study / "summary.md").unlink()
    assert study.write_summary(finished_study) == before  # from the committed sources alone
    for name in ("dice_vs_fraction.png", "curves_0.34.png", "curves_1.png", "curves.csv"):
        assert (finished_study / name).stat().st_size > 0


def test_rerun_skips_finished_runs(
    finished_study: Path, micro_msd: Path, mri_run: Path, runner, monkeypatch
):
    def must_not_train(config):
        raise AssertionError(f"retrained {config.output}")

    monkeypatch.setattr("medgraft.training.trainer.run_training", must_not_train)
    before = (finished_study / "results.csv").read_text()
    result = invoke(runner, *study_args(micro_msd, finished_study, mri_run))
    assert result.exit_code == 0, result.output
    assert (finished_study / "results.csv").read_text() == before


def fake_trainer(calls: list, metrics: str, monkeypatch):
    """A trainer that records its configs and writes ``metrics`` as the run's metrics.csv, put
    in place of the one ``medgraft train`` runs (each run of a study is a train job)."""

    def fake_train(config):
        calls.append(config)
        run = Path(config.output)
        run.mkdir(parents=True, exist_ok=True)
        (run / "metrics.csv").write_text(metrics)
        last = metrics.strip().splitlines()[-1].split(",")[0]
        (run / "val_cases.csv").write_text(
            f"epoch,case,class,dice,hd95\n{last},hippocampus_001,Anterior,0.5,1.0\n"
        )
        return TrainResult(run, 0.5, 1, [], 1.0)

    monkeypatch.setattr("medgraft.training.trainer.run_training", fake_train)


HERE = LocalLauncher(run_command, threads=1)
"""Each run in turn, in this process, as ``medgraft study`` runs them by default."""


def test_interrupted_run_resumes_and_a_new_one_starts_fresh(
    micro_msd: Path, tmp_path: Path, monkeypatch
):
    calls = []
    fake_trainer(
        calls,
        "epoch,val_mean_dice,val_dice_Anterior,val_dice_Posterior,seconds\n"
        "1,0.5,0.4,0.6,3\n2,0.8,0.7,0.9,3\n",
        monkeypatch,
    )

    options = StudyOptions(inits="none", fractions="1.0", seeds=2)
    plan = StudyPlan.from_options(str(micro_msd), str(tmp_path), options)
    interrupted = tmp_path / "runs" / "none-f1-s1"
    interrupted.mkdir(parents=True)
    (interrupted / "last.pt").write_bytes(b"")
    rows = run_study(plan, HERE)
    assert [(c.seed, c.resume, c.overwrite) for c in calls] == [(0, False, True), (1, True, False)]
    assert rows[0]["epochs_to_90"] == 2 and rows[0]["final_dice_Posterior"] == 0.9


def test_study_refuses_an_output_made_from_other_cases(micro_msd: Path, tmp_path: Path):
    (tmp_path / "split.json").write_text(json.dumps({"val": ["x"], "pool": ["y"]}))
    with pytest.raises(MedgraftError, match="started on other cases"):
        plan = StudyPlan.from_options(str(micro_msd), str(tmp_path), StudyOptions())
        run_study(plan, HERE)


def _results(means: dict[tuple[str, float], float], seeds: int = 3, cases: int = 20):
    """Study results whose per-case Dice scatter (+-0.02) around the given means."""
    rng = np.random.default_rng(0)
    runs, case_rows = [], []
    for (init, fraction), mean in means.items():
        for seed in range(seeds):
            runs.append({"init": init, "fraction": str(fraction), "seed": str(seed)})
            runs[-1]["train_cases"] = str(round(fraction * 40))
            for case in range(cases):
                dice = mean + rng.uniform(-0.02, 0.02)
                row = {"init": init, "fraction": str(fraction), "seed": str(seed)}
                case_rows.append({**row, "case": f"c{case}", "class": "A", "dice": str(dice)})
    return study.StudyResults({}, runs, case_rows, [])


def test_claims_follow_from_the_intervals():
    results = _results({("none", 1.0): 0.80, ("imagenet", 1.0): 0.85, ("imagenet", 0.1): 0.6})
    difference = results.versus_scratch("imagenet", 1.0)
    assert difference.verdict == "ahead" and difference.low > 0
    assert difference.mean == pytest.approx(0.05, abs=0.01)
    assert results.versus_scratch("imagenet", 0.1, at=1.0).verdict == "behind"
    tied = _results({("none", 1.0): 0.80, ("imagenet", 1.0): 0.801})
    assert tied.versus_scratch("imagenet", 1.0).verdict == "not distinguishable"


def test_matching_fraction_asks_not_behind_scratch_at_full_labels():
    means = {("none", 1.0): 0.80, ("none", 0.25): 0.6, ("imagenet", 0.1): 0.70}
    means |= {("imagenet", 0.25): 0.801, ("imagenet", 1.0): 0.85}
    assert study.matching_fraction(_results(means), "imagenet") == 0.25
    without_full_scratch = {k: v for k, v in means.items() if k != ("none", 1.0)}
    assert study.matching_fraction(_results(without_full_scratch), "imagenet") is None
    never = _results({("none", 1.0): 0.9, ("imagenet", 1.0): 0.8})
    assert study.matching_fraction(never, "imagenet") is None


def test_a_run_finished_with_other_options_is_refused_or_redone(
    micro_msd: Path, tmp_path: Path, monkeypatch
):
    trained = []
    fake_trainer(trained, "epoch,val_mean_dice,seconds\n1,0.5,3\n", monkeypatch)

    def plan(**options):
        settings = StudyOptions(inits="none", fractions="1.0", seeds=1, **options)
        return StudyPlan.from_options(str(micro_msd), str(tmp_path), settings)

    run_study(plan(epochs=1), HERE)
    run_study(plan(epochs=1), HERE)  # same options: reused
    assert len(trained) == 1
    with pytest.raises(MedgraftError, match="other training options"):
        run_study(plan(epochs=2), HERE)
    run_study(plan(epochs=2, redo_changed=True), HERE)
    assert len(trained) == 2 and trained[1].epochs == 2 and trained[1].overwrite
