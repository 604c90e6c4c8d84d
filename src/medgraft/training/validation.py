"""Scoring a model on whole validation cases (volumes reassembled from their slices)."""

from __future__ import annotations

from medgraft.data.cases import LoadedCase
from medgraft.evaluation.metrics import ScoringContext, score_case
from medgraft.inference.predictor import Predictor
from medgraft.training.run_log import ValidationScores


def score_validation_cases(
    predictor: Predictor, cases: list[LoadedCase], num_classes: int, metrics: list[str]
) -> ValidationScores:
    """``metrics`` (registered names) per case and foreground class; a case with a region of
    interest is scored inside it only."""
    scores = ValidationScores(metrics)
    for case in cases:
        pred = predictor.segment(case.image).labels
        truth = case.label[0]
        if case.roi is not None:
            inside = case.roi[0] > 0
            pred, truth = pred * inside, truth * inside
        context = ScoringContext(num_classes, case.spacing[: truth.ndim])
        scores.add(case.case_id, score_case(pred, truth, context, metrics))
    return scores
