"""``report.html``: one static page to look at a batch of predictions and find the cases that
failed or look wrong.

It opens from disk with no server and no network: thumbnails are embedded as ``data:`` URIs and
the sorting script is inline. Every text that comes from a file (names, paths, messages) goes
through Jinja2's autoescaping, so a case called ``<script>`` is shown, never run.

Flags per case:

- ``failed``: the case could not be segmented (the message says why);
- ``empty``: the mask holds no foreground at all;
- ``<label> high`` / ``<label> low``: the label's volume (mL, or pixels in 2D) lies far from the
  batch's median by the robust z-score of Iglewicz and Hoaglin, ``0.6745 (x - median) / MAD``,
  with ``|z| > 3.5`` (their recommended cut-off). It is computed over the segmented cases of the
  batch and only when there are at least ``MIN_CASES_FOR_OUTLIERS`` of them and the MAD is not 0.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from jinja2 import Environment, PackageLoader
from PIL import Image

ROBUST_Z_LIMIT = 3.5
MIN_CASES_FOR_OUTLIERS = 5
THUMBNAIL_HEIGHT = 72


def thumbnail_png(montage: np.ndarray, height: int = THUMBNAIL_HEIGHT) -> bytes:
    """A small PNG of an overlay montage (H, W, 3 uint8), ``height`` pixels high."""
    image = Image.fromarray(montage)
    width = max(1, round(image.width * height / image.height))
    buffer = io.BytesIO()
    image.resize((width, height), Image.Resampling.BILINEAR).save(buffer, format="PNG")
    return buffer.getvalue()


def robust_z(values: Sequence[float]) -> np.ndarray | None:
    """Iglewicz-Hoaglin modified z-scores, or None when too few values or no spread."""
    array = np.asarray(values, dtype=float)
    if array.size < MIN_CASES_FOR_OUTLIERS:
        return None
    median = np.median(array)
    mad = np.median(np.abs(array - median))
    if mad == 0:
        return None
    return 0.6745 * (array - median) / mad


@dataclass
class PageRow:
    """What the page shows of one case."""

    case_id: str
    status: str
    seconds: float
    sizes: list[float]
    input: str
    output: str
    message: str
    thumbnail: bytes | None
    flags: list[str]

    @property
    def thumbnail_uri(self) -> str | None:
        if self.thumbnail is None:
            return None
        return "data:image/png;base64," + base64.b64encode(self.thumbnail).decode("ascii")


def flag_rows(rows: list[PageRow], label_names: list[str]) -> None:
    """Add the failed, empty and outlier flags (see the module docstring) to ``rows``."""
    segmented = [r for r in rows if r.status == "ok" and r.sizes]
    for row in rows:
        if row.status == "failed":
            row.flags.append("failed")
        elif row.status == "ok" and row.sizes and not any(row.sizes):
            row.flags.append("empty")
    for index, name in enumerate(label_names):
        scores = robust_z([r.sizes[index] for r in segmented])
        if scores is None:
            continue
        for row, z in zip(segmented, scores, strict=True):
            if abs(z) > ROBUST_Z_LIMIT:
                row.flags.append(f"{name} {'high' if z > 0 else 'low'} (z {z:+.1f})")


TEMPLATE = "report.html.j2"
"""The page's Jinja2 template, shipped next to this module."""


def render_page(
    rows: list[PageRow], label_names: list[str], unit: str, title: str = "batch report"
) -> str:
    """The page's HTML for ``rows`` (flags added here)."""
    flag_rows(rows, label_names)
    counts = {
        "total": len(rows),
        "ok": sum(r.status == "ok" for r in rows),
        "skipped": sum(r.status == "skipped" for r in rows),
        "failed": sum(r.status == "failed" for r in rows),
        "flagged": sum(bool(r.flags) for r in rows),
    }
    environment = Environment(loader=PackageLoader("medgraft.inference", ""), autoescape=True)
    template = environment.get_template(TEMPLATE)
    return template.render(
        title=title,
        rows=rows,
        label_names=label_names,
        unit=unit,
        counts=counts,
        z_limit=ROBUST_Z_LIMIT,
        min_cases=MIN_CASES_FOR_OUTLIERS,
    )
