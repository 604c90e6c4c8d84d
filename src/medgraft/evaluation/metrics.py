"""Segmentation metrics by name, computed with MONAI: the one place a metric is added.

A metric is one function registered with :func:`register_metric`: it takes integer label maps of
the same spatial shape (no channel axis) and a :class:`ScoringContext`, and returns one value per
foreground class (label values 1 .. ``num_classes - 1``). ``medgraft evaluate``, the per-epoch
validation of training (for metrics that declare ``per_epoch``, or that ``--val-metrics`` asks
for), ``val_cases.csv``, the study and the reports iterate :data:`METRICS`. A class absent from
``truth`` scores NaN everywhere, so means over cases skip it rather than reward or punish an
empty class. torch and MONAI are imported inside the functions, so the CLI lists the names
without them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from medgraft.registry import Registry

if TYPE_CHECKING:
    import torch
    from monai.metrics import HausdorffDistanceMetric, SurfaceDiceMetric

DEFAULT_NSD_TOLERANCE_MM = 1.0
"""Normalized surface Dice tolerance of classes given none (``evaluate --nsd-tolerance``)."""


@dataclass(frozen=True)
class ScoringContext:
    """What a metric needs beside the two label maps."""

    num_classes: int
    spacing: Sequence[float]
    """Voxel size in mm (1 per pixel for 2D images), in the maps' axis order."""
    nsd_tolerances: Sequence[float] = field(default_factory=tuple)
    """NSD tolerance in mm per foreground class; classes left out get the default."""

    def tolerance(self, value: int) -> float:
        """The NSD tolerance of label ``value``."""
        given = self.nsd_tolerances
        return float(given[value - 1]) if value - 1 < len(given) else DEFAULT_NSD_TOLERANCE_MM


MetricFunction = Callable[["torch.Tensor", "torch.Tensor", ScoringContext], list[float]]


@dataclass(frozen=True)
class Metric:
    """A registered metric: its function and how tables and validation use it."""

    compute: MetricFunction
    title: str
    """Column title in tables (``HD95``)."""
    per_epoch: bool = False
    """Computed by every epoch's validation unless ``--val-metrics`` says otherwise."""
    decimals: int = 3


METRICS: Registry[Metric] = Registry("metric", "--val-metrics")


def register_metric(
    name: str, *, title: str, per_epoch: bool = False, decimals: int = 3
) -> Callable[[MetricFunction], MetricFunction]:
    """Decorator: add a metric under ``name`` (the CSV columns are ``<name>_<class>``)."""

    def add(compute: MetricFunction) -> MetricFunction:
        metric = Metric(compute, title, per_epoch, decimals)
        METRICS.register(name, help=_first_line(compute.__doc__))(metric)
        return compute

    return add


def per_epoch_metrics() -> list[str]:
    """The metrics every epoch's validation computes by default."""
    return [name for name, metric in METRICS.items() if metric.per_epoch]


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0].rstrip(".") if doc else ""


def _one_hot_pair(
    pred: torch.Tensor, truth: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    from monai.networks.utils import one_hot

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


@register_metric("dice", title="Dice", per_epoch=True)
def dice(pred: torch.Tensor, truth: torch.Tensor, context: ScoringContext) -> list[float]:
    """Dice of each foreground class; NaN where the class is absent from the truth.

    A class in ``truth`` but missing from ``pred`` scores 0.
    """
    from monai.metrics import DiceMetric

    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    scores = metric(*_one_hot_pair(pred, truth, context.num_classes))
    return [float(v) for v in scores[0]]


@register_metric("hd95", title="HD95", per_epoch=True, decimals=2)
def hd95(pred: torch.Tensor, truth: torch.Tensor, context: ScoringContext) -> list[float]:
    """Symmetric 95th-percentile Hausdorff distance of each foreground class, in mm.

    NaN where the class is absent from ``truth``. Where it is in ``truth`` but missing from
    ``pred`` the distance is unbounded: MONAI 1.6 returns NaN there (the percentile of infinite
    distances), which a NaN-skipping mean would silently drop, so this returns ``inf`` instead.
    """
    from monai.metrics import HausdorffDistanceMetric

    num_classes = context.num_classes
    metric = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
    scores = _surface_metric(metric, pred, truth, num_classes, context.spacing)
    in_truth, in_pred = _present(truth, num_classes), _present(pred, num_classes)
    return [
        score if t and p else (math.inf if t else math.nan)
        for score, t, p in zip(scores, in_truth, in_pred, strict=True)
    ]


@register_metric("nsd", title="NSD")
def nsd(pred: torch.Tensor, truth: torch.Tensor, context: ScoringContext) -> list[float]:
    """Normalized surface Dice of each foreground class, within its tolerance in mm.

    The share of both boundaries lying within the class's tolerance of the other boundary. NaN
    where the class is absent from ``truth`` (MONAI gives 0 when only ``pred`` has it); 0 where
    it is in ``truth`` but missing from ``pred`` (MONAI's value).
    """
    from monai.metrics import SurfaceDiceMetric

    num_classes = context.num_classes
    tolerances = [context.tolerance(v) for v in range(1, num_classes)]
    metric = SurfaceDiceMetric(
        class_thresholds=tolerances, include_background=False, reduction="none"
    )
    scores = _surface_metric(metric, pred, truth, num_classes, context.spacing)
    in_truth = _present(truth, num_classes)
    return [score if t else math.nan for score, t in zip(scores, in_truth, strict=True)]


def score_case(
    pred: torch.Tensor, truth: torch.Tensor, context: ScoringContext, names: Sequence[str]
) -> dict[str, list[float]]:
    """``{metric: per-class values}`` for each registered metric in ``names``."""
    return {name: METRICS.get(name).compute(pred, truth, context) for name in names}


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
    from monai.transforms.utils import distance_transform_edt

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
