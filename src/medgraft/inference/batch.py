"""Batch segmentation: a folder of scans in, masks that open on the originals out.

Inputs are whatever ``data.io`` registers (NIfTI files, nnU-Net ``_0000`` names included, DICOM
series folders, 2D PNG/JPG/TIFF images), one file or a folder of them. Masks keep the input's
grid and header (``data.scans``); what is written per case is chosen among the registered mask
writers (``data.writers``). Outputs are written under a temporary name and renamed;
existing outputs are skipped unless ``overwrite``; a failing case is reported and the batch
goes on. Next to the masks: ``summary.csv`` (a row per case) and ``report.html`` (the same cases
with overlay thumbnails and flags, ``inference.qa_page``). Under torchrun each process takes its
share of the cases; a shard (``--shard K/N``, one task of ``--launcher slurm``) records its
cases in ``shards/``, and the shards' records are merged into one summary and page at the end.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.markup import escape
from rich.progress import TextColumn

from medgraft.config.schema import PredictOptions
from medgraft.data.io import case_id_of, find_format, list_scans, supported_kinds
from medgraft.data.scans import read_scan_for_model
from medgraft.data.writers import CaseOutput, MaskWriter, chosen_writers
from medgraft.errors import MedgraftError
from medgraft.files import atomic_write, atomic_write_text, remove_stale_temporaries, write_csv
from medgraft.inference.postprocess import (
    keep_largest_component,
    label_sizes,
    overlay_montage,
    remove_small_objects,
)
from medgraft.inference.predictor import Predictor
from medgraft.inference.qa_page import PageRow, render_page, thumbnail_png
from medgraft.models.checkpoint import ensemble_checkpoints, load_finished_checkpoint
from medgraft.runtime import amp_dtype, console, progress, rank_and_world, select_device

SAFE_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
SHARDS_FOLDER = "shards"
"""Inside the output folder: one record per shard of a sharded batch."""


@dataclass
class CaseResult:
    case_id: str
    input: str
    output: str | None
    status: str
    """``ok``, ``skipped`` (output already there) or ``failed``."""
    seconds: float = 0.0
    slices: int = 0
    message: str = ""
    sizes: list[float] = field(default_factory=list)
    thumbnail: bytes | None = None
    """A small PNG of the overlay, for ``report.html``."""


@dataclass
class BatchReport:
    results: list[CaseResult]
    output: Path
    summary: Path
    """``summary.csv``, or the shard's record for a shard."""
    page: Path | None
    """``report.html``; none for a shard (the merge writes the batch's page)."""

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    def line(self) -> str:
        """One line for the terminal: how many cases were segmented, skipped and failed."""
        skipped, failed = self.count("skipped"), self.count("failed")
        return (
            f"segmented {len(self.results) - failed - skipped}/{len(self.results)} case(s) "
            f"into {self.output} ({skipped} skipped as already done, {failed} failed); "
            f"summary: {self.summary}" + (f", to look at: {self.page}" if self.page else "")
        )


def input_cases(path: Path) -> list[Path]:
    """A single scan (file or DICOM series folder), or every scan inside a folder."""
    if path.is_file() or find_format(path) is not None:
        return [path]
    if not path.is_dir():
        raise MedgraftError(f"{path}: input not found")
    cases = list_scans(path)
    if not cases:
        others = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
        found = f"{len(others)} other file(s), e.g. {others[0]}" if others else "folder is empty"
        raise MedgraftError(
            f"{path}: no NIfTI, DICOM series or 2D image files found ({found}; supported: "
            f"{supported_kinds()})"
        )
    return cases


def safe_case_id(path: Path) -> str:
    """The case id as a plain file name: no separators, no '..', nothing hidden."""
    raw = path.name if path.is_dir() else case_id_of(path)
    cleaned = "".join(c if c in SAFE_CHARACTERS else "_" for c in raw).lstrip(".")
    return cleaned or "case"


def check_writers_accept(writers: list[MaskWriter], inputs: list[Path]) -> None:
    """Refuse inputs a chosen writer cannot write for (DICOM-SEG of a NIfTI) before any work."""
    for path in inputs:
        scan_format = find_format(path)
        for writer in writers:
            writer.check_accepts(path, scan_format)


def shard(cases: list[Path], rank: int, world_size: int) -> list[Path]:
    """This rank's deterministic share of the cases (round robin over the sorted list)."""
    return sorted(cases)[rank::world_size]


def check_output_location(inputs: list[Path], output_dir: Path) -> None:
    """Refuse an output folder that is, or lies inside, an input folder: inputs stay untouched."""
    out = output_dir.resolve()
    for folder in {(p if p.is_dir() else p.parent).resolve() for p in inputs}:
        if out == folder or folder in out.parents:
            raise MedgraftError(
                f"{output_dir}: output folder must not be inside the input folder {folder}"
            )


def load_predictor(models: list[Path], options: PredictOptions) -> Predictor:
    """The (ensembled) models, a run folder meaning its ``options.checkpoint`` and a folder of
    folds or views all of theirs; ``options`` left unset follow the first model's defaults."""
    checkpoints = [
        load_finished_checkpoint(member)
        for model in models
        for member in ensemble_checkpoints(model, options.checkpoint)
    ]
    device = select_device(options.device)
    return Predictor.from_checkpoints(
        checkpoints,
        device=device,
        batch_size=options.batch_size,
        amp_dtype=amp_dtype(options.amp, device),
        tta=options.with_model_defaults(checkpoints[0].inputs.inference).tta,
    )


def predict_cases(
    predictor: Predictor, inputs: list[Path], output_dir: Path, options: PredictOptions
) -> Iterator[CaseResult]:
    """Segment each input into ``output_dir`` with the chosen writers, yielding one result per
    case; a case whose first writer's file exists is skipped unless ``options.overwrite``."""
    options = options.with_model_defaults(predictor.inputs.inference)
    writers = chosen_writers(options.writer_names)
    check_output_location(inputs, output_dir)
    check_writers_accept(writers, inputs)
    output_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output_dir)  # left by a run that was killed mid-write
    for path in inputs:
        started = time.perf_counter()
        case_id = safe_case_id(path)
        scan_format = find_format(path)  # None: reading fails below and reports the case
        target = writers[0].target(output_dir / case_id, scan_format) if scan_format else None
        if target is not None and target.exists() and not options.overwrite:
            yield CaseResult(case_id, str(path), str(target), "skipped", message="output exists")
            continue
        try:
            result = _predict_one(predictor, path, output_dir / case_id, writers, options)
        except MedgraftError as exc:
            result = CaseResult(case_id, str(path), None, "failed", message=str(exc))
        result.seconds = time.perf_counter() - started
        yield result


def _predict_one(
    predictor: Predictor,
    path: Path,
    stem: Path,
    writers: list[MaskWriter],
    options: PredictOptions,
) -> CaseResult:
    """Segment one input and write it with each writer; ``stem`` is output folder / case id."""
    scan = read_scan_for_model(path, predictor.inputs.preprocessing)
    keep_probabilities = any(writer.needs_probabilities for writer in writers)
    segmentation = predictor.segment(scan.image, keep_probabilities=keep_probabilities)
    labels = torch.as_tensor(scan.restore(segmentation.labels[None], True)[0])
    if options.largest_component:
        labels = keep_largest_component(labels, predictor.num_classes)
    if options.min_size > 0:
        labels = remove_small_objects(labels, options.min_size, predictor.num_classes)
    mask = labels.numpy().astype(np.uint8)
    probabilities = None
    if segmentation.probabilities is not None:
        probabilities = scan.restore(segmentation.probabilities.float(), False)
    label_names = {int(value): name for value, name in predictor.inputs.labels.items()}
    written: list[Path] = []
    for writer in writers:
        target = writer.target(stem, scan.format)
        written += writer.write(CaseOutput(mask, scan, path, label_names, probabilities, target))
    montage = overlay_montage(scan.restore(scan.image, False), mask)
    if options.overlays:
        atomic_write(
            stem.with_name(f"{stem.name}_overlay.png"),
            lambda tmp: Image.fromarray(montage).save(tmp, format="PNG"),
        )
    return CaseResult(
        stem.name,
        str(path),
        str(written[0]),
        "ok",
        slices=segmentation.slices,
        sizes=label_sizes(mask, predictor.num_classes, scan.geometry.voxel_ml),
        thumbnail=thumbnail_png(montage),
    )


def run_batch(
    models: list[Path],
    inputs: list[Path],
    output: Path,
    options: PredictOptions,
    part: tuple[int, int] | None = None,
) -> BatchReport:
    """Segment this process's share of ``inputs`` with a progress bar; write ``summary.csv``
    and ``report.html``, or for shard ``part`` (index, count) its record only."""
    chosen_writers(options.writer_names)  # a bad name fails before any model is loaded
    rank, world = part or rank_and_world()
    share = shard(inputs, rank, world)
    members = [
        member for model in models for member in ensemble_checkpoints(model, options.checkpoint)
    ]
    predictor = load_predictor(members, options)
    if len(members) > 1:
        names = ", ".join(str(member) for member in members)
        console.print(f"ensemble of {len(members)} models: {escape(names)}")
    options = options.with_model_defaults(predictor.inputs.inference)
    if options.tta and not predictor.inputs.mirror_axes:
        console.print(
            "note: the model was trained without flips, so predicting without "
            "mirroring TTA (it would average in predictions it never learned)"
        )
    results = _segment_share(predictor, share, output, options)
    for failed in (r for r in results if r.status == "failed"):
        console.print(f"[red]failed:[/] {escape(failed.message)}")
    labels, volumetric = predictor.inputs.labels, predictor.inputs.volumetric
    if part is not None:
        record = write_shard_record(results, share, output, part, labels, volumetric)
        return BatchReport(results, output, record, None)
    suffix = "" if world == 1 else f".rank{rank}"
    summary, page = output / f"summary{suffix}.csv", output / f"report{suffix}.html"
    write_summary(results, summary, labels, volumetric)
    write_page(results, page, labels, volumetric)
    return BatchReport(results, output, summary, page)


def _segment_share(
    predictor: Predictor, share: list[Path], output: Path, options: PredictOptions
) -> list[CaseResult]:
    results, slices, started = [], 0, time.perf_counter()
    with progress(TextColumn("{task.fields[speed]}")) as bar:
        task = bar.add_task("segmenting", total=len(share), speed="")
        for result in predict_cases(predictor, share, output, options):
            results.append(result)
            slices += result.slices
            speed = slices / max(time.perf_counter() - started, 1e-9)
            bar.update(task, advance=1, speed=f"{speed:.1f} slices/s" if slices else "")
    return results


def shard_record_path(output: Path, part: tuple[int, int]) -> Path:
    index, count = part
    return output / SHARDS_FOLDER / f"shard-{index}-of-{count}.json"


def write_shard_record(
    results: list[CaseResult],
    share: list[Path],
    output: Path,
    part: tuple[int, int],
    labels: dict[str, str],
    volumetric: bool,
) -> Path:
    """What one shard did, thumbnails included, for :func:`merge_shards`; written last and
    atomically, so its presence means the shard ran to its end."""
    cases = []
    for result in results:
        case = asdict(result)
        thumbnail = result.thumbnail
        case["thumbnail"] = base64.b64encode(thumbnail).decode() if thumbnail else None
        cases.append(case)
    record = {
        "inputs": [str(path) for path in share],
        "labels": labels,
        "volumetric": volumetric,
        "results": cases,
    }
    path = shard_record_path(output, part)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(record))


def read_shard_record(output: Path, part: tuple[int, int], inputs: list[Path]) -> dict | None:
    """Shard ``part``'s record when it is one of these ``inputs``' shard (else None: a record
    of another input folder or split is never merged)."""
    path = shard_record_path(output, part)
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return record if record["inputs"] == [str(p) for p in shard(inputs, *part)] else None


def shard_finished(output: Path, part: tuple[int, int], inputs: list[Path]) -> bool:
    """Whether shard ``part`` of ``inputs`` ran to its end with every case segmented (or
    already there): a failed case is tried again by the shard's next run."""
    record = read_shard_record(output, part, inputs)
    return record is not None and all(case["status"] != "failed" for case in record["results"])


def merge_shards(output: Path, inputs: list[Path], count: int) -> BatchReport:
    """``summary.csv`` and ``report.html`` of the whole batch from its ``count`` shards'
    records (one row per input, in the inputs' order, as one run would write them)."""
    records = [read_shard_record(output, (index, count), inputs) for index in range(count)]
    missing = [index for index, record in enumerate(records) if record is None]
    if missing:
        raise MedgraftError(
            f"{output / SHARDS_FOLDER}: shard(s) {missing} of {count} wrote no record; "
            "run the command again to segment what is missing"
        )
    order = {str(path): position for position, path in enumerate(inputs)}
    results = []
    for record in records:
        for case in record["results"]:
            thumbnail = case["thumbnail"]
            case["thumbnail"] = base64.b64decode(thumbnail) if thumbnail else None
            results.append(CaseResult(**case))
    results.sort(key=lambda result: order[result.input])
    labels, volumetric = records[0]["labels"], records[0]["volumetric"]
    summary, page = output / "summary.csv", output / "report.html"
    write_summary(results, summary, labels, volumetric)
    write_page(results, page, labels, volumetric)
    return BatchReport(results, output, summary, page)


def foreground_names(label_names: dict[str, str]) -> list[str]:
    return [label_names[k] for k in sorted(label_names, key=int) if int(k) > 0]


def write_page(
    results: list[CaseResult], path: Path, label_names: dict[str, str], volumetric: bool
) -> None:
    """``report.html``: the batch's cases with thumbnails and flags (``inference.qa_page``)."""
    fields = ("case_id", "status", "seconds", "sizes", "input", "message", "thumbnail")
    rows = [
        PageRow(**{f: getattr(r, f) for f in fields}, output=r.output or "", flags=[])
        for r in results
    ]
    html = render_page(
        rows, foreground_names(label_names), "mL" if volumetric else "pixels", str(path.parent)
    )
    atomic_write(path, lambda tmp: tmp.write_text(html, encoding="utf-8"))


def write_summary(
    results: list[CaseResult], path: Path, label_names: dict[str, str], volumetric: bool
) -> None:
    """One row per case: status, seconds, slices and size of each label (mL, or pixels in 2D)."""
    unit = "ml" if volumetric else "pixels"
    names = foreground_names(label_names)
    size_columns = [f"{n}_{unit}" for n in names]
    rows = [
        {
            "case_id": r.case_id,
            "status": r.status,
            "seconds": f"{r.seconds:.2f}",
            "slices": r.slices,
            # sizes are empty for a case skipped or failed: its cells stay empty
            **{c: f"{s:.4g}" for c, s in zip(size_columns, r.sizes, strict=False)},
            "input": r.input,
            "output": r.output or "",
            "message": r.message,
        }
        for r in results
    ]
    columns = ["case_id", "status", "seconds", "slices", *size_columns, "input", "output"]
    write_csv(path, rows, [*columns, "message"])
