"""Compare predicted masks with ground truth, per case and per class.

Metrics: every one registered in ``evaluation.metrics.METRICS`` (MONAI's Dice, HD95 in mm and
normalized surface Dice (NSD) within a tolerance in mm, and any added there).
Distances use the ground truth's voxel spacing (NIfTI header) for volumes, 1 per pixel for 2D
images, so HD95 and NSD mean the same thing across scanners.

Empty classes: a class absent from a case's ground truth scores NaN in all three metrics and is
left out of that class's mean and std (there is nothing to find, so neither reward nor penalty).
A class in the ground truth that the prediction misses scores Dice 0, NSD 0 and HD95 ``inf``
(MONAI itself returns NaN there, which would silently drop the worst cases from the mean). The
``inf`` stays in the rows and the CSV, is left out of the HD95 mean and std (it would make them
inf) and is counted instead: ``MetricSummary.n_inf``, "(N missed)" in the console table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from medgraft.config.schema import EvaluateOptions
from medgraft.data.checks import BinarizeByteMaskd, FirstChannelMaskd
from medgraft.data.discovery import parse_labels
from medgraft.data.io import (
    case_id_of,
    format_of,
    is_volume,
    list_images,
    pair_cases,
    read_scan,
)
from medgraft.errors import MedgraftError
from medgraft.evaluation.metrics import (
    METRICS,
    ScoringContext,
    error_bands_per_class,
    score_case,
)
from medgraft.files import write_csv
from medgraft.runtime import console, stdout

DEFAULT_NSD_TOLERANCE = EvaluateOptions().nsd_tolerance
"""NSD tolerance in mm for classes not given one."""


@dataclass(frozen=True)
class MetricSummary:
    """One metric of one class over the cases: mean and population std (ddof=0) of the finite
    values, so NaN (class absent from the truth) and inf (HD95 of a missed class) are skipped."""

    mean: float
    std: float
    n: int
    """Cases in the mean and std."""
    n_inf: int
    """Cases skipped because the value is inf: the prediction missed a class of the truth."""

    @classmethod
    def of(cls, values: Sequence[float]) -> MetricSummary:
        array = np.asarray(values, dtype=float)
        finite = array[np.isfinite(array)]
        n_inf = int(np.isinf(array).sum())
        if finite.size == 0:
            return cls(math.nan, math.nan, 0, n_inf)
        return cls(float(finite.mean()), float(finite.std()), int(finite.size), n_inf)


@dataclass
class Evaluation:
    label_names: dict[int, str]
    rows: list[dict] = field(default_factory=list)
    """One dict per case: ``case_id``, ``<metric>_<class>`` for each registered metric and
    ``mean_dice``."""
    missing: list[str] = field(default_factory=list)
    """Cases with ground truth but no prediction."""
    extra: list[str] = field(default_factory=list)
    """Predictions without ground truth."""
    nsd_tolerance: dict[int, float] = field(default_factory=dict)
    """NSD tolerance in mm per label value."""
    stray: dict[str, int] = field(default_factory=dict)
    """Mask file -> voxels of unknown label values counted as background (when asked to)."""

    def values(self, metric: str, name: str) -> list[float]:
        """Per-case values of ``metric`` (a registered one) for the class called ``name``."""
        return [row[f"{metric}_{name}"] for row in self.rows]

    def summary(self) -> dict[str, dict[str, MetricSummary]]:
        """``summary()[metric][class name]`` for every registered metric and every class."""
        return {
            metric: {
                name: MetricSummary.of(self.values(metric, name))
                for name in self.label_names.values()
            }
            for metric in METRICS
        }

    def class_means(self) -> dict[str, float]:
        """Mean Dice per class."""
        return {
            name: MetricSummary.of(self.values("dice", name)).mean
            for name in self.label_names.values()
        }

    def mean_dice(self) -> float:
        """Mean of the per-class mean Dice, so each class weighs the same."""
        means = [v for v in self.class_means().values() if not math.isnan(v)]
        return float(np.mean(means)) if means else math.nan

    def write_csv(self, path: Path) -> None:
        """One row per case, then ``STD`` and ``MEAN`` rows over the cases.

        ``MEAN`` comes last so that readers taking the last row as the summary keep working.
        Per-case cells keep ``nan`` and ``inf``; the summary rows skip them (see
        ``MetricSummary``). Under ``mean_dice`` the STD row holds the std of the per-case mean Dice.
        """
        summaries = {
            f"{metric}_{name}": summary
            for metric, per_class in self.summary().items()
            for name, summary in per_class.items()
        }
        columns = [*summaries, "mean_dice"]
        cases = [
            {"case_id": row["case_id"], **{c: f"{row[c]:.5f}" for c in columns}}
            for row in self.rows
        ]
        per_case = MetricSummary.of([row["mean_dice"] for row in self.rows])
        std = {"case_id": "STD", **{c: f"{s.std:.5f}" for c, s in summaries.items()}}
        mean = {"case_id": "MEAN", **{c: f"{s.mean:.5f}" for c, s in summaries.items()}}
        std["mean_dice"], mean["mean_dice"] = f"{per_case.std:.5f}", f"{self.mean_dice():.5f}"
        write_csv(path, [*cases, std, mean], ["case_id", *columns])

    def table(self) -> Table:
        """Per-case rows and a bold mean ± std row, for ``console.print``."""
        names = list(self.label_names.values())
        tolerances = sorted(set(self.nsd_tolerance.values()))
        within = (
            f"{tolerances[0]:g}"
            if len(tolerances) == 1
            else ", ".join(f"{self.label_names[v]} {t:g}" for v, t in self.nsd_tolerance.items())
        )
        table = Table(
            title=", ".join(METRICS.get(m).title for m in METRICS) + " per case",
            caption=(
                f"HD95 and NSD tolerance ({within}) in mm, pixels for 2D images. '-': class absent "
                "from the truth; 'inf': class missed by the prediction, left out of the HD95 mean "
                "and counted as 'missed'."
            ),
        )
        # case ids are never cut: the metric columns wrap instead
        longest = max((len(row["case_id"]) for row in self.rows), default=4)
        table.add_column("case", no_wrap=True, min_width=longest)
        for metric in METRICS:
            for name in names:
                table.add_column(f"{METRICS.get(metric).title} {name}", justify="right")
        table.add_column("mean Dice", justify="right")
        for row in self.rows:
            table.add_row(
                row["case_id"],
                *[_cell(metric, row[f"{metric}_{name}"]) for metric in METRICS for name in names],
                _cell("dice", row["mean_dice"]),
            )
        table.add_section()
        summary = self.summary()
        per_case = MetricSummary.of([row["mean_dice"] for row in self.rows])
        table.add_row(
            "mean ± std",
            *[_mean_std(metric, summary[metric][name]) for metric in METRICS for name in names],
            _mean_std("dice", MetricSummary(self.mean_dice(), per_case.std, per_case.n, 0)),
            style="bold",
        )
        return table


def _cell(metric: str, value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.{METRICS.get(metric).decimals}f}"


def _mean_std(metric: str, summary: MetricSummary) -> str:
    text = (
        "-" if summary.n == 0 else f"{_cell(metric, summary.mean)} ± {_cell(metric, summary.std)}"
    )
    return f"{text} ({summary.n_inf} missed)" if summary.n_inf else text


def _load_mask(path: Path) -> torch.Tensor:
    mask = read_scan(path)
    if not is_volume(path):
        mask = FirstChannelMaskd("m")({"m": mask})["m"]
        mask = BinarizeByteMaskd("m", max_label=1)({"m": mask})["m"] if mask.max() == 255 else mask
    values = mask.as_tensor()
    if not torch.all(values == torch.round(values)):
        raise MedgraftError(f"{path}: mask has non-integer values")
    return values[0].long()


def _known_labels(
    mask: torch.Tensor, path: Path, num_classes: int, to_background: bool, result: Evaluation
) -> torch.Tensor:
    """``mask`` if every value is a class (0..num_classes-1); stray values fail or become 0."""
    stray = (mask < 0) | (mask >= num_classes)
    if not stray.any():
        return mask
    values = sorted(int(v) for v in torch.unique(mask[stray]))
    if not to_background:
        raise MedgraftError(
            f"{path}: label values {values} ({int(stray.sum())} voxels) are not among the "
            f"classes 0..{num_classes - 1}; pass --stray-labels-to-background to count them "
            "as background"
        )
    result.stray[str(path)] = int(stray.sum())
    return torch.where(stray, torch.zeros_like(mask), mask)


def _spacing(path: Path, ndim: int) -> tuple[float, ...]:
    """Voxel size in mm from the NIfTI header (the reader keeps the stored axis order), or for
    other volume formats from their affine; 2D images carry no physical size, so distances
    there are in pixels."""
    scan_format = format_of(path)
    if not scan_format.volumetric:
        return (1.0,) * ndim
    if scan_format.name == "nifti":
        zooms = tuple(float(z) for z in nib.load(str(path)).header.get_zooms()[:ndim])
    else:
        zooms = tuple(float(z) for z in read_scan(path).pixdim[:ndim])
    if len(zooms) != ndim or not all(z > 0 for z in zooms):
        raise MedgraftError(f"{path}: header voxel size {zooms} does not fit a {ndim}D mask")
    return zooms


def _tolerances(
    nsd_tolerance: float | Mapping[int, float], label_names: dict[int, str]
) -> dict[int, float]:
    if isinstance(nsd_tolerance, Mapping):
        unknown = sorted(set(nsd_tolerance) - set(label_names))
        if unknown:
            raise MedgraftError(f"NSD tolerance given for unknown label value(s) {unknown}")
        tolerances = {v: float(nsd_tolerance.get(v, DEFAULT_NSD_TOLERANCE)) for v in label_names}
    else:
        tolerances = dict.fromkeys(label_names, float(nsd_tolerance))
    for value, tolerance in tolerances.items():
        if not (math.isfinite(tolerance) and tolerance >= 0):
            raise MedgraftError(f"NSD tolerance of label {value} must be >= 0 mm, got {tolerance}")
    return tolerances


def _regions_of_interest(roi_mask: Path | None, preds: dict[str, Path]) -> dict[str, Path] | None:
    """Each case's ROI file: the one file given, or its match in the folder given."""
    if roi_mask is None:
        return None
    if roi_mask.is_file():
        return dict.fromkeys(preds, roi_mask)
    if not roi_mask.is_dir():
        raise MedgraftError(f"{roi_mask}: ROI mask not found")
    found = pair_cases(preds, {case_id_of(p): p for p in list_images(roi_mask)})
    missing = sorted(set(preds) - set(found))
    if missing:
        raise MedgraftError(
            f"{roi_mask}: no ROI mask for case {missing[0]} ({len(missing)} in all)"
        )
    return found


def _inside(
    roi_path: Path, pred: torch.Tensor, truth: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prediction and truth with everything outside the ROI set to background."""
    roi = read_scan(roi_path).as_tensor()
    roi = (roi[0] if roi.ndim == truth.ndim + 1 else roi) > 0
    if roi.shape != truth.shape:
        raise MedgraftError(
            f"{roi_path}: ROI shape {tuple(roi.shape)} != truth {tuple(truth.shape)}"
        )
    return pred * roi, truth * roi


def evaluate_folders(
    pred_dir: Path,
    truth_dir: Path,
    label_names: dict[int, str] | None = None,
    cases: list[str] | None = None,
    nsd_tolerance: float | Mapping[int, float] = DEFAULT_NSD_TOLERANCE,
    stray_to_background: bool = EvaluateOptions.stray_labels_to_background,
    roi_mask: Path | None = None,
    error_bands: bool = False,
) -> Evaluation:
    """Dice, HD95 and NSD of every prediction in ``pred_dir`` against the same-named mask in
    ``truth_dir``, in the ground truth's voxel spacing.

    ``cases`` restricts the comparison to those case ids (e.g. a run's validation split).
    ``nsd_tolerance`` is in mm, one value for all classes or a map from label value to mm (classes
    left out get ``DEFAULT_NSD_TOLERANCE``). A label value outside the classes is an error
    naming the file, or with ``stray_to_background`` counts as background and is reported.
    ``roi_mask`` (one mask file, or a folder of per-case masks) limits scoring to the region
    where it is non-zero: prediction and truth both count as background outside it.
    ``error_bands`` adds ``<band>_<class>`` counts (:func:`error_bands_per_class`).
    """
    for folder in (pred_dir, truth_dir):
        if not folder.is_dir():
            raise MedgraftError(f"{folder}: folder not found")
    preds = {case_id_of(p): p for p in list_images(pred_dir)}
    truth_files = {case_id_of(p): p for p in list_images(truth_dir)}
    # each prediction's truth: the same case id, or the same case key (``pair_cases``: DRIVE's
    # 1st_manual/21_manual1.gif is the truth of 21_training)
    truths = pair_cases(preds, truth_files)
    used = set(truths.values())
    unscored = sorted(c for c, p in truth_files.items() if p not in used)
    if cases is not None:
        truths = {c: p for c, p in truths.items() if c in set(cases)}
        unscored = [c for c in unscored if c in set(cases)]
    matched = sorted(truths)
    if not matched:
        raise MedgraftError(
            f"{pred_dir}: no prediction has a same-named ground truth in {truth_dir}"
        )
    rois = _regions_of_interest(roi_mask, {c: preds[c] for c in matched})
    loaded = [(case, _load_mask(preds[case]), _load_mask(truths[case])) for case in matched]
    if label_names is None:
        top = max(int(max(p.max(), t.max())) for _, p, t in loaded)
        label_names = {v: f"label_{v}" for v in range(1, max(top, 1) + 1)}
    else:
        label_names = {k: v for k, v in label_names.items() if k != 0}
    num_classes = max(label_names) + 1
    tolerances = _tolerances(nsd_tolerance, label_names)
    class_tolerances = [tolerances.get(v, DEFAULT_NSD_TOLERANCE) for v in range(1, num_classes)]
    result = Evaluation(
        label_names,
        missing=unscored,
        extra=sorted(set(preds) - set(pair_cases(preds, truth_files))),
        nsd_tolerance=tolerances,
    )
    for case, pred, truth in loaded:
        if pred.shape != truth.shape:
            raise MedgraftError(
                f"{preds[case]}: shape {tuple(pred.shape)} != truth {tuple(truth.shape)}"
            )
        pred = _known_labels(pred, preds[case], num_classes, stray_to_background, result)
        truth = _known_labels(truth, truths[case], num_classes, stray_to_background, result)
        if rois is not None:
            pred, truth = _inside(rois[case], pred, truth)
        spacing = _spacing(truths[case], truth.ndim)
        context = ScoringContext(num_classes, spacing, class_tolerances)
        scores = score_case(pred, truth, context, METRICS.names())
        row: dict = {"case_id": case}
        for metric, values in scores.items():
            row.update({f"{metric}_{name}": values[v - 1] for v, name in label_names.items()})
        bands = error_bands_per_class(pred, truth, num_classes) if error_bands else None
        for v, name in label_names.items() if bands else ():
            row.update({f"{band}_{name}": count for band, count in bands[v - 1].items()})
        dice = [row[f"dice_{name}"] for name in label_names.values()]
        row["mean_dice"] = MetricSummary.of(dice).mean
        result.rows.append(row)
    return result


def evaluate_and_report(
    pred: Path,
    truth: Path,
    options: EvaluateOptions,
    *,
    labels_file: Path | None = None,
    label_names: dict[int, str] | None = None,
    output: Path | None = None,
    cases: list[str] | None = None,
) -> Evaluation:
    """Score ``pred`` against ``truth``, print the table and what was left out, write the CSV.

    Label names come from ``labels_file`` (a ``dataset.json``) when given, else ``label_names``.
    """
    if labels_file is not None:
        try:
            label_names = parse_labels(json.loads(labels_file.read_text()), labels_file)
        except (OSError, json.JSONDecodeError) as exc:
            raise MedgraftError(f"{labels_file}: cannot read labels ({exc})") from exc
    evaluation = evaluate_folders(
        pred,
        truth,
        label_names,
        cases=cases,
        nsd_tolerance=options.nsd_tolerance,
        stray_to_background=options.stray_labels_to_background,
        roi_mask=Path(options.roi_mask) if options.roi_mask else None,
    )
    Console(width=max(stdout.width, 120)).print(evaluation.table())
    for path, voxels in evaluation.stray.items():
        console.print(f"[yellow]stray labels counted as background:[/] {path} ({voxels})")
    for case in evaluation.missing:
        console.print(f"[yellow]missing prediction:[/] {case}")
    if evaluation.extra:
        console.print(f"{len(evaluation.extra)} prediction(s) without ground truth were not scored")
    if output is not None:
        evaluation.write_csv(output)
        stdout.print(f"wrote {output}")
    if evaluation.missing and not options.allow_missing:
        raise MedgraftError(
            f"{pred}: {len(evaluation.missing)} case(s) with ground truth have no prediction "
            f"(e.g. {evaluation.missing[0]}), so the means above leave them out; pass "
            "--allow-missing to accept that"
        )
    return evaluation
