"""The demo: fine-tune on the embedded MRI data, segment held-out and unlabelled scans, score.

It runs offline on a CPU in minutes and goes through the same functions as ``medgraft train``,
``predict`` and ``evaluate``. The held-out cases are only scored: the model is the last
epoch's, so they choose no checkpoint (their Dice per epoch is shown, not used).
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from medgraft.config.loading import resolve_options
from medgraft.config.schema import (
    DEMO_TRAINING,
    DemoOptions,
    EvaluateOptions,
    PredictOptions,
    TrainConfig,
)
from medgraft.data.discovery import discover_dataset
from medgraft.errors import MedgraftError
from medgraft.evaluation.evaluate import Evaluation, evaluate_and_report
from medgraft.inference.batch import run_batch
from medgraft.runtime import stdout
from medgraft.training.trainer import run_training


def run_demo(options: DemoOptions, output: Path | None = None) -> Evaluation:
    """Train, predict the held-out and unlabelled cases, and score the held-out ones."""
    started = time.perf_counter()
    output = output or Path("runs") / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    data = Path(options.data)
    if not data.is_dir():
        raise MedgraftError(
            f"{data}: demo data not found; run from the medgraft checkout or pass --data"
        )
    this_run = {
        "data": str(data),
        "output": str(output / "model"),
        "epochs": options.epochs,
        "val_fraction": options.val_fraction,
        "device": options.device,
    }
    result = run_training(TrainConfig(**resolve_options([DEMO_TRAINING, this_run])))
    held_out = [Path(r.image) for r in result.val_cases]
    predict = PredictOptions(device=options.device, tta=False)  # trained without flips
    # the run folder means its last epoch's model (not best.pt): the held-out cases are
    # scored, so they must not also choose the checkpoint
    model = output / "model"
    reports = [run_batch([model], held_out, output / "predictions", predict)]
    spec = discover_dataset(data)
    if spec.test:
        unlabelled = [Path(r.image) for r in spec.test]
        predictions = output / "predictions-unlabelled"
        reports.append(run_batch([model], unlabelled, predictions, predict))
    for report in reports:
        stdout.print(report.line())
    failed = sum(report.count("failed") for report in reports)
    if failed:
        raise MedgraftError(
            f"demo: {failed} case(s) failed to segment (see the lines above and summary.csv "
            "in each predictions folder); no Dice is reported from an incomplete run"
        )
    evaluation = evaluate_and_report(
        output / "predictions",
        Path(result.val_cases[0].label).parent,
        EvaluateOptions(),
        label_names=spec.labels,
        output=output / "dice.csv",
        cases=[r.case_id for r in result.val_cases],
    )
    stdout.print(
        f"[bold]demo finished in {time.perf_counter() - started:.0f}s[/]: mean foreground "
        f"Dice {evaluation.mean_dice():.3f} on {len(evaluation.rows)} held-out cases (model of "
        f"the last epoch, chosen by none of them); outputs in {output}"
    )
    return evaluation
