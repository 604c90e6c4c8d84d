"""``report.html``: a static, self-contained page of a batch, with flags and escaped names."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pytest

from medgraft.inference.qa_page import PageRow, render_page, robust_z, thumbnail_png

HOSTILE = '<img src=x onerror="alert(1)">'


class Page(HTMLParser):
    """The parts of the page the tests look at: tags with attributes, rows, cells' text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.rows: list[list[str]] = []
        self._in_body = self._in_cell = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append([])
        elif tag == "td" and self._in_body:
            self.rows[-1].append("")
            self._in_cell = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False
        elif tag == "td":
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.rows[-1][-1] += data


def _row(case_id: str, sizes: list[float], status: str = "ok", message: str = "") -> PageRow:
    thumbnail = thumbnail_png(np.full((32, 64, 3), 128, np.uint8)) if status == "ok" else None
    return PageRow(case_id, status, 1.5, sizes, f"in/{case_id}", "", message, thumbnail, [])


@pytest.fixture
def page() -> Page:
    rows = [_row(f"case_{i}", [10.0 + i % 3, 5.0]) for i in range(6)]
    rows += [
        _row("huge", [100.0, 5.0]),
        _row("empty", [0.0, 0.0]),
        _row("<script>alert(1)</script>", [], status="failed", message=f"{HOSTILE}: corrupt"),
    ]
    return Page(render_page(rows, ["Anterior", "Posterior"], "mL"))


def test_every_case_is_a_row_with_its_flags(page: Page):
    rows = {cells[0]: cells for cells in page.rows}
    assert len(rows) == 9
    assert "Anterior high" in rows["huge"][2]
    assert rows["empty"][2].startswith("empty")  # (and far below the median)
    assert rows["<script>alert(1)</script>"][2] == "failed"
    assert all(rows[f"case_{i}"][2] == "" for i in range(6))
    assert rows["huge"][4] == "100"


def test_names_and_messages_are_escaped_not_run(page: Page):
    scripts = [t for t, _ in page.tags if t == "script"]
    assert len(scripts) == 1  # the page's own sorting script, nothing from a file name
    assert not any("onerror" in attrs for _, attrs in page.tags)
    failed = next(cells for cells in page.rows if cells[1] == "failed")
    assert HOSTILE in failed[-1]  # shown as text


def test_the_page_needs_no_network(page: Page):
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    assert len(images) == 8  # every segmented case; the failed one has none
    assert all(a["src"].startswith("data:image/png;base64,") for a in images)
    links = [a.get("src") or a.get("href") for _, a in page.tags if "src" in a or "href" in a]
    assert not [link for link in links if not link.startswith("data:")]
    headers = [attrs for tag, attrs in page.tags if tag == "th"]
    assert [h["data-type"] for h in headers][:4] == ["text", "text", "text", "num"]


def test_robust_z_needs_enough_cases_and_spread():
    assert robust_z([1.0, 2.0, 3.0]) is None
    assert robust_z([5.0] * 10) is None
    scores = robust_z([10, 11, 9, 10, 12, 100])
    assert scores[-1] > 3.5 and abs(scores[0]) < 3.5
