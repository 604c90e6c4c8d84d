"""Compare predicted masks with ground truth, per case and per class (MONAI Dice)."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medgraft.data.discovery import case_id_of, is_volume, list_images
from medgraft.data.io import load_image
from medgraft.data.transforms import BinarizeByteMaskd, FirstChannelMaskd
from medgraft.engine.metrics import dice_per_class
from medgraft.errors import MedgraftError


@dataclass
class Evaluation:
    label_names: dict[int, str]
    rows: list[dict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Cases with ground truth but no prediction."""
    extra: list[str] = field(default_factory=list)
    """Predictions without ground truth."""

    def class_means(self) -> dict[str, float]:
        return {
            name: float(np.nanmean([r[name] for r in self.rows])) if self.rows else float("nan")
            for name in self.label_names.values()
        }

    def mean_dice(self) -> float:
        means = list(self.class_means().values())
        return float(np.nanmean(means)) if means else float("nan")

    def write_csv(self, path: Path) -> None:
        names = list(self.label_names.values())
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["case_id", *[f"dice_{n}" for n in names], "mean_dice"])
            for row in self.rows:
                writer.writerow(
                    [row["case_id"], *[f"{row[n]:.5f}" for n in names], f"{row['mean']:.5f}"]
                )
            writer.writerow(
                [
                    "MEAN",
                    *[f"{v:.5f}" for v in self.class_means().values()],
                    f"{self.mean_dice():.5f}",
                ]
            )


def _load_mask(path: Path) -> torch.Tensor:
    mask = load_image(path)
    if not is_volume(path):
        mask = FirstChannelMaskd("m")({"m": mask})["m"]
        mask = BinarizeByteMaskd("m", max_label=1)({"m": mask})["m"] if mask.max() == 255 else mask
    values = mask.as_tensor()
    if not torch.all(values == torch.round(values)):
        raise MedgraftError(f"{path}: mask has non-integer values")
    return values[0].long()


def evaluate_folders(
    pred_dir: Path,
    truth_dir: Path,
    label_names: dict[int, str] | None = None,
    cases: list[str] | None = None,
) -> Evaluation:
    """Dice of every prediction in ``pred_dir`` against the same-named mask in ``truth_dir``.

    ``cases`` restricts the comparison to those case ids (e.g. a run's validation split).
    """
    for folder in (pred_dir, truth_dir):
        if not folder.is_dir():
            raise MedgraftError(f"{folder}: folder not found")
    preds = {case_id_of(p): p for p in list_images(pred_dir)}
    truths = {case_id_of(p): p for p in list_images(truth_dir)}
    if cases is not None:
        truths = {c: p for c, p in truths.items() if c in set(cases)}
    matched = sorted(set(preds) & set(truths))
    if not matched:
        raise MedgraftError(
            f"{pred_dir}: no prediction has a same-named ground truth in {truth_dir}"
        )
    loaded = [(case, _load_mask(preds[case]), _load_mask(truths[case])) for case in matched]
    if label_names is None:
        top = max(int(max(p.max(), t.max())) for _, p, t in loaded)
        label_names = {v: f"label_{v}" for v in range(1, max(top, 1) + 1)}
    else:
        label_names = {k: v for k, v in label_names.items() if k != 0}
    num_classes = max(label_names) + 1
    result = Evaluation(
        label_names,
        missing=sorted(set(truths) - set(preds)),
        extra=sorted(set(preds) - set(truths)),
    )
    for case, pred, truth in loaded:
        if pred.shape != truth.shape:
            raise MedgraftError(
                f"{preds[case]}: shape {tuple(pred.shape)} != truth {tuple(truth.shape)}"
            )
        if int(max(pred.max(), truth.max())) >= num_classes:
            raise MedgraftError(
                f"{preds[case]} / {truths[case]}: label values beyond {sorted(label_names)}"
            )
        scores = dice_per_class(pred, truth, num_classes)
        row = {"case_id": case}
        row.update({label_names[v]: scores[v - 1] for v in label_names})
        row["mean"] = float(np.nanmean([row[n] for n in label_names.values()]))
        result.rows.append(row)
    return result
