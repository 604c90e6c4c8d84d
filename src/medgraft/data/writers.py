"""Mask writers: what ``medgraft predict`` writes for each case, one registered entry per output.

Inputs are read through ``data.io.FORMATS``; outputs are written by the entries of
:data:`MASK_WRITERS`, and ``--output-format`` takes a comma-separated list of their names. A new
output (a mesh, an RT-STRUCT) is one function decorated with :func:`mask_writer`, nothing else.
This module imports nothing heavy, so the command line lists the writers without loading torch;
each writer imports what it needs when it runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medgraft.errors import MedgraftError
from medgraft.registry import Registry

if TYPE_CHECKING:
    import numpy as np

    from medgraft.data.io import ScanFormat
    from medgraft.data.scans import Scan


@dataclass(frozen=True)
class CaseOutput:
    """What a writer gets for one segmented case."""

    mask: np.ndarray
    """Label map (uint8) on the input's own grid."""
    scan: Scan
    """The input as read, with its format and geometry."""
    source: Path
    """The input file or DICOM series folder."""
    label_names: dict[int, str]
    """Class index → name, from the model (``dataset.json``)."""
    probabilities: np.ndarray | None
    """(classes, spatial…) on the input's grid; present when a chosen writer needs them."""
    target: Path
    """Where this writer writes: the output folder, the case id and the writer's suffix."""


WriteCase = Callable[[CaseOutput], list[Path]]
"""Writes a case (atomically, ``files.atomic_write``) and returns the paths it wrote."""


@dataclass(frozen=True)
class MaskWriter:
    """One kind of output: how its file is named, what it takes, and how it is written."""

    name: str
    write: WriteCase
    suffix: str | Callable[[ScanFormat], str]
    """What the file adds to the case id, fixed or by input format: known before any work, so
    a case whose output exists is skipped."""
    accepts: tuple[str, ...] = ()
    """Names of the input formats (``data.io.FORMATS``) it writes for; empty: every one."""
    needs_probabilities: bool = False
    """Whether the predictor must keep class probabilities (:attr:`CaseOutput.probabilities`)."""

    def target(self, stem: Path, scan_format: ScanFormat) -> Path:
        """The file written for an input of ``scan_format`` at ``stem`` (folder / case id)."""
        suffix = self.suffix if isinstance(self.suffix, str) else self.suffix(scan_format)
        return stem.with_name(f"{stem.name}{suffix}")

    def check_accepts(self, path: Path, scan_format: ScanFormat | None) -> None:
        """A one-line error naming ``path`` if this writer cannot write for it."""
        if self.accepts and (scan_format is None or scan_format.name not in self.accepts):
            kind = scan_format.name if scan_format else "not a recognised scan"
            raise MedgraftError(
                f"{path}: --output-format {self.name} takes only {', '.join(self.accepts)} "
                f"inputs (this is {kind}); use --output-format nifti"
            )


MASK_WRITERS: Registry[MaskWriter | tuple[str, ...]] = Registry("mask writer", "--output-format")
"""Every output ``medgraft predict`` can write, by name; an entry that is a tuple of names is an
alias for those writers."""


def mask_writer(
    name: str,
    *,
    suffix: str | Callable[[ScanFormat], str],
    accepts: tuple[str, ...] = (),
    needs_probabilities: bool = False,
    help: str = "",
) -> Callable[[WriteCase], WriteCase]:
    """Decorator: register the decorated function as the writer ``--output-format name``."""

    def register(write: WriteCase) -> WriteCase:
        writer = MaskWriter(name, write, suffix, accepts, needs_probabilities)
        first_doc_line = (inspect.getdoc(write) or "").split("\n")[0].rstrip(".")
        MASK_WRITERS.register(name, help=help or first_doc_line)(writer)
        return write

    return register


def chosen_writers(names: Iterable[str]) -> list[MaskWriter]:
    """The writers called ``names`` in order, aliases expanded and each once; an unknown name
    is a one-line error listing the valid ones."""
    chosen: list[MaskWriter] = []
    for name in names:
        entry = MASK_WRITERS.get(name)
        for member in entry if isinstance(entry, tuple) else (name,):
            writer = MASK_WRITERS.get(member)  # an alias names writers, never other aliases
            if writer not in chosen:
                chosen.append(writer)  # type: ignore[arg-type]
    return chosen


@mask_writer("nifti", suffix=lambda scan_format: scan_format.mask_suffix)
def write_native_mask(case: CaseOutput) -> list[Path]:
    """The mask in the input's own kind of file: NIfTI with its affine and header, PNG for 2D."""
    case.scan.write_mask(case.mask, case.target)
    return [case.target]


@mask_writer("dicom-seg", suffix="_seg.dcm", accepts=("dicom-series",))
def write_dicom_seg_object(case: CaseOutput) -> list[Path]:
    """A DICOM Segmentation object referencing each slice of a DICOM series input."""
    from medgraft.data.dicom_seg import write_dicom_seg

    write_dicom_seg(case.mask, case.source, case.target, case.label_names)
    return [case.target]


MASK_WRITERS.register("both", help="nifti and dicom-seg (the same as nifti,dicom-seg)")(
    ("nifti", "dicom-seg")
)


@mask_writer(
    "probabilities",
    suffix=lambda scan_format: scan_format.probabilities_suffix,
    needs_probabilities=True,
)
def write_probabilities(case: CaseOutput) -> list[Path]:
    """Class probabilities on the input's grid: float NIfTI (x, y, z, class), .npz for 2D."""
    if case.probabilities is None:
        raise MedgraftError(f"{case.source}: no class probabilities were kept for this case")
    case.scan.write_probabilities(case.probabilities, case.target)
    return [case.target]
