"""The demo reports a Dice only from a complete run: a failed case fails the demo."""

from __future__ import annotations

from pathlib import Path

import pytest

from medgraft import demo
from medgraft.config.schema import DemoOptions
from medgraft.data.records import CaseRecord
from medgraft.errors import MedgraftError
from medgraft.inference.batch import BatchReport, CaseResult
from medgraft.training.trainer import TrainResult


def test_a_failed_case_fails_the_demo(demo_dir: Path, tmp_path: Path, monkeypatch) -> None:
    case = CaseRecord("c", str(demo_dir / "imagesTr" / "hippocampus_001.nii.gz"))
    monkeypatch.setattr(
        demo, "run_training", lambda config: TrainResult(tmp_path, 0.5, 1, [case], 1.0)
    )
    scored = []
    monkeypatch.setattr(demo, "evaluate_and_report", lambda *a, **k: scored.append(a))

    def one_failure(models, inputs, output, options) -> BatchReport:
        results = [CaseResult("c", str(p), None, "failed", message="corrupt") for p in inputs]
        return BatchReport(results, output, output / "summary.csv", output / "report.html")

    monkeypatch.setattr(demo, "run_batch", one_failure)
    with pytest.raises(MedgraftError, match=r"case\(s\) failed to segment"):
        demo.run_demo(DemoOptions(data=str(demo_dir)), tmp_path / "out")
    assert not scored
