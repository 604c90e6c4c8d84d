"""Segmentation metrics, computed with MONAI.

All functions take integer label maps of the same spatial shape (no channel axis) and return one
value per foreground class (label values 1 .. ``num_classes - 1``). A class absent from ``truth``
scores NaN everywhere, so means over cases skip it rather than reward or punish an empty class.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDiceMetric
from monai.networks.utils import one_hot
from monai.transforms.utils import distance_transform_edt


def _one_hot_pair(
    pred: torch.Tensor, truth: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != truth.shape:
        raise ValueError(
            f"prediction shape {tuple(pred.shape)} != truth shape {tuple(truth.shape)}"
        )
    return (
        one_hot(pred[None, None].long(), num_classes),
        one_hot(truth[None, None].long(), num_classes),
    )


def _present(mask: torch.Tensor, num_classes: int) -> list[bool]:
    return [bool((mask == c).any()) for c in range(1, num_classes)]


def _surface_metric(
    metric: HausdorffDistanceMetric | SurfaceDiceMetric,
    pred: torch.Tensor,
    truth: torch.Tensor,
    num_classes: int,
    spacing: Sequence[float],
) -> list[float]:
    """Run a MONAI surface metric without its empty-mask warnings: callers handle empties."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".* is all 0, this may result in nan/inf")
        warnings.filterwarnings(
            "ignore", message=".*always_return_as_numpy", category=FutureWarning
        )
        scores = metric(
            *_one_hot_pair(pred, truth, num_classes), spacing=[float(s) for s in spacing]
        )
    return [float(v) for v in scores[0]]


def dice_per_class(pred: torch.Tensor, truth: torch.Tensor, num_classes: int) -> list[float]:
    """Dice of each foreground class for one case; NaN where the class is absent from ``truth``.

    A class in ``truth`` but missing from ``pred`` scores 0.
    """
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    scores = metric(*_one_hot_pair(pred, truth, num_classes))
    return [float(v) for v in scores[0]]


def hd95_per_class(
    pred: torch.Tensor, truth: torch.Tensor, num_classes: int, spacing: Sequence[float]
) -> list[float]:
    """Symmetric 95th-percentile Hausdorff distance of each foreground class, in ``spacing`` units.

    NaN where the class is absent from ``truth``. Where it is in ``truth`` but missing from
    ``pred`` the distance is unbounded: MONAI 1.6 returns NaN there (the percentile of infinite
    distances), which a NaN-skipping mean would silently drop, so this returns ``inf`` instead.
    """
    metric = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
    scores = _surface_metric(metric, pred, truth, num_classes, spacing)
    in_truth, in_pred = _present(truth, num_classes), _present(pred, num_classes)
    return [
        score if t and p else (math.inf if t else math.nan)
        for score, t, p in zip(scores, in_truth, in_pred, strict=True)
    ]


def nsd_per_class(
    pred: torch.Tensor,
    truth: torch.Tensor,
    num_classes: int,
    spacing: Sequence[float],
    tolerances: Sequence[float],
) -> list[float]:
    """Normalized surface Dice of each foreground class: the share of both boundaries lying within
    ``tolerances[c - 1]`` (``spacing`` units) of the other boundary.

    NaN where the class is absent from ``truth`` (MONAI gives 0 when only ``pred`` has it); 0 where
    it is in ``truth`` but missing from ``pred`` (MONAI's value).
    """
    metric = SurfaceDiceMetric(
        class_thresholds=[float(t) for t in tolerances], include_background=False, reduction="none"
    )
    scores = _surface_metric(metric, pred, truth, num_classes, spacing)
    in_truth = _present(truth, num_classes)
    return [score if t else math.nan for score, t in zip(scores, in_truth, strict=True)]


ERROR_BANDS = ("true_positive", "fp_boundary", "fp_far", "fn_boundary", "fn_far")
"""Voxel counts :func:`error_bands_per_class` returns for each class."""


def error_bands_per_class(
    pred: torch.Tensor, truth: torch.Tensor, num_classes: int
) -> list[dict[str, int]]:
    """Where each foreground class's wrong voxels lie, as voxel counts (keys ``ERROR_BANDS``).

    A *boundary* error touches the truth's border: a false positive face-adjacent to the
    structure, or a false negative in its outermost layer. Every other wrong voxel is *far*: a
    part invented or missed outright. When nearly all errors are boundary errors, Dice is
    limited by how precisely borders are placed at this voxel size, not by what was found.
    """
    counts = []
    for value in range(1, num_classes):
        inside, predicted = (truth == value).numpy(), (pred == value).numpy()
        # distance of each voxel outside the structure to it, and inside it to the background
        to_structure = distance_transform_edt(~inside[None])[0]
        to_background = distance_transform_edt(inside[None])[0]
        false_positive, false_negative = predicted & ~inside, inside & ~predicted
        fp_boundary = int((false_positive & (to_structure <= 1)).sum())
        fn_boundary = int((false_negative & (to_background <= 1)).sum())
        counts.append(
            {
                "true_positive": int((predicted & inside).sum()),
                "fp_boundary": fp_boundary,
                "fp_far": int(false_positive.sum()) - fp_boundary,
                "fn_boundary": fn_boundary,
                "fn_far": int(false_negative.sum()) - fn_boundary,
            }
        )
    return counts
