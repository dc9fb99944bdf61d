"""Bin labels people can read (issue 29, item 7): edges to 4 significant digits in text, no two
bins alike, and chart tick labels that neither overlap nor leave the SVG. Stored labels stay exact."""

from __future__ import annotations

import html
import math
import re
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from driftmon.inspect import report
from driftmon.inspect.explain import as_dict, as_table, explain_window
from driftmon.inspect.labels import edge_text, readable_label, readable_labels
from driftmon.inspect.report import render_report
from driftmon.sources.binning import numeric_labels
from driftmon.windows import TimeRange
from tests.test_explain import WINDOW_END, settings, stored_rows

SPAN = TimeRange(WINDOW_END - timedelta(days=1), WINDOW_END)
CHAR_EM = 0.6  # DejaVu Sans averages about 0.55 em a character: an estimate on the generous side


# --- rounding ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "text"), [
    (103.89581668961603, "103.9"), (16877.3, "16880"), (0.000123456, "0.0001235"), (1234567.0, "1.235e+06"),
    (3.0, "3"), (-2.5, "-2.5"), (0.0, "0"), (9999.7, "10000"), (1e-7, "1e-07"),
    (math.inf, "+inf"), (-math.inf, "-inf"),
])
def test_an_edge_is_shown_to_4_significant_digits(value, text):
    assert edge_text(value) == text


def test_the_issues_labels_are_rounded():
    assert readable_label("[103.89581668961603, +inf)") == "[103.9, +inf)"
    assert readable_label("(-inf, 16877.312)") == "(-inf, 16880)"
    assert readable_label("[1.5, 3.0)") == "[1.5, 3)"


def test_infinite_edges_keep_their_sign():
    assert readable_labels(numeric_labels([0.123456, 7.0])) == ["(-inf, 0.1235)", "[0.1235, 7)", "[7, +inf)"]
    assert readable_label("(-inf, +inf)") == "(-inf, +inf)"


def test_categories_are_shown_whole_in_text_and_cut_on_an_axis():
    long = "a category far longer than an axis has room for"
    assert readable_labels(["DE", long]) == ["DE", long]
    assert readable_labels(["DE", long], cut=18) == ["DE", long[:17] + "…"]


# --- no two bins alike ----------------------------------------------------------------------------


def test_bins_alike_at_4_digits_get_more_digits():
    labels = numeric_labels([1.00001, 1.00002, 103.89581668961603])
    texts = readable_labels(labels)
    assert texts == ["(-inf, 1)", "[1.00001, 1.00002)", "[1, 103.9)", "[103.9, +inf)"]
    assert len(set(texts)) == len(texts)


def test_a_bin_whose_two_edges_read_alike_gets_more_digits():
    assert readable_labels(["[0.99995, 1.00002)"]) == ["[0.99995, 1)"]  # "[1, 1)" at 4 digits


def test_categories_alike_once_cut_are_cut_longer():
    labels = ["customer segment north-east", "customer segment north-west", "other"]
    texts = readable_labels(labels, cut=18)
    assert len(set(texts)) == 3 and texts[2] == "other"
    assert all(label.startswith(text.removesuffix("…")) for label, text in zip(labels, texts, strict=True))


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12),
                min_size=1, max_size=30, unique=True))
def test_no_two_numeric_bins_ever_read_alike(cuts):
    texts = readable_labels(numeric_labels(sorted(cuts)))
    assert len(set(texts)) == len(texts)
    for text in texts:
        low, high = text[1:-1].split(", ")
        assert low != high


# --- where the labels are shown ---------------------------------------------------------------------

CUTS = [103.89581668961603 * k + 1e-6 * k for k in range(1, 12)]


def rows_of(labels: list[str], column: str = "amount") -> list[dict]:
    counts = [float(k + 1) for k in range(len(labels))]
    return stored_rows(settings(), WINDOW_END, {column: (labels, counts, counts[::-1])})


def test_explain_shows_rounded_labels_and_stores_exact_ones():
    labels = numeric_labels(CUTS)
    explanation = explain_window(settings(), rows_of(labels))
    table = as_table(explanation, top=None)
    assert "\n  [103.9, 207.8) " in table and "\n  [1143, +inf) " in table
    assert "103.8958" not in table
    assert [b["label"] for b in as_dict(explanation)["columns"][0]["top_bins"]] != []
    assert {b["label"] for b in as_dict(explanation)["columns"][0]["top_bins"]} == set(labels)


def test_the_reports_summary_shows_the_rounded_label():
    labels = numeric_labels(CUTS)
    rows = rows_of(labels)
    page = render_report(settings(), explain_window(settings(), rows), rows, SPAN)
    summary = page[page.index("<table class='summary'>"):page.index("</table>")]
    assert "103.8958" not in summary and re.search(r"[\[(](-inf|[\d.]+), ([\d.]+|\+inf)\) \(", summary)


# --- the SVG: every text inside, no two tick labels overlapping ----------------------------------------

_TEXT = re.compile(r"<text\b([^>]*)>([^<]*)</text>")


def text_boxes(svg: str) -> list[tuple[str, list[tuple[float, float]], bool]]:
    """Each text's estimated box (its four corners) and whether it is turned: width from its
    characters and font size, height a font size above the baseline and a quarter below."""
    boxes = []
    for attributes, raw in _TEXT.findall(svg):
        text = html.unescape(raw)
        size = float(re.search(r"font-size: ([\d.]+)px", attributes)[1])
        anchor = re.search(r"text-anchor: (\w+)", attributes)
        width = len(text) * CHAR_EM * size
        start = {"middle": -width / 2, "end": -width}.get(anchor[1] if anchor else "start", 0.0)
        x = float(re.search(r' x="([-\d.]+)"', attributes)[1]) if ' x="' in attributes else 0.0
        y = float(re.search(r' y="([-\d.]+)"', attributes)[1]) if ' y="' in attributes else 0.0
        translate = re.search(r"translate\(([-\d.e]+)[ ,]([-\d.e]+)\)", attributes)
        dx, dy = (float(translate[1]), float(translate[2])) if translate else (0.0, 0.0)
        rotate = re.search(r"rotate\(([-\d.]+)\)", attributes)
        angle = math.radians(float(rotate[1])) if rotate else 0.0
        corners = []
        for u, v in ((start, -size), (start + width, -size), (start + width, size / 4), (start, size / 4)):
            u, v = u + x, v + y
            cos, sin = math.cos(angle), math.sin(angle)
            corners.append((dx + u * cos - v * sin, dy + u * sin + v * cos))
        boxes.append((text, corners, bool(rotate)))
    return boxes


def overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> bool:
    """Whether two convex quadrilaterals overlap (separating axis theorem)."""
    for polygon in (a, b):
        for (x1, y1), (x2, y2) in zip(polygon, polygon[1:] + polygon[:1], strict=True):
            normal = (y1 - y2, x2 - x1)
            pa = [normal[0] * x + normal[1] * y for x, y in a]
            pb = [normal[0] * x + normal[1] * y for x, y in b]
            if max(pa) <= min(pb) or max(pb) <= min(pa):
                return False
    return True


def tick_labels(svg: str, labels: list[str]) -> list[tuple[str, list[tuple[float, float]], bool]]:
    return [box for box in text_boxes(svg) if box[0] in labels]


def charts(labels: list[str], history: bool) -> list[str]:
    """The chart of one column's bins: beside its history (the report), or alone (no history stored)."""
    rows = rows_of(labels)
    column = explain_window(settings(), rows).columns[0]
    with report._drawing():
        svg = (report._figure_svg(column, rows, SPAN, 3, "t-") if history else report._bars_svg(column, 3, "t-"))
    return [svg]


MANY_NUMERIC = numeric_labels([16877.312 * k ** 1.5 + 0.123456 for k in range(1, 80)])
CASES = {
    "few categories": ["DE", "FR", "US", "__other__", "__missing__"],
    "long categories": [f"a rather long category name number {k}" for k in range(12)],
    "the issue's numeric bins": numeric_labels(CUTS),
    "eighty numeric bins": MANY_NUMERIC,
    "three hundred categories": [f"c{k:03d}" for k in range(300)],
}


@pytest.mark.parametrize("history", [True, False], ids=["with history", "bars only"])
@pytest.mark.parametrize("labels", list(CASES.values()), ids=list(CASES))
def test_chart_labels_lie_inside_the_svg_and_never_overlap(labels, history):
    (svg,) = charts(labels, history)
    width, height = (float(v) for v in re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg).groups())
    boxes = text_boxes(svg)
    assert boxes
    for text, corners, _ in boxes:
        assert all(-0.5 <= x <= width + 0.5 and -0.5 <= y <= height + 0.5 for x, y in corners), (text, corners)
    shown = set(readable_labels(labels, cut=18))
    ticks = tick_labels(svg, shown)
    assert ticks, "no bin is labelled"
    for k, (text, corners, _) in enumerate(ticks):
        for other, others, _ in ticks[k + 1:]:
            assert not overlap(corners, others), (text, other)


def test_a_long_label_is_turned_and_the_chart_grows_to_hold_it():
    (short,) = charts(CASES["few categories"], history=False)
    (long,) = charts(CASES["eighty numeric bins"], history=False)
    assert not any(turned for _, _, turned in tick_labels(short, set(CASES["few categories"])))
    assert all(turned for _, _, turned in tick_labels(long, set(readable_labels(MANY_NUMERIC, cut=18))))
    height = [float(re.search(r'viewBox="0 0 [\d.]+ ([\d.]+)"', svg)[1]) for svg in (short, long)]
    assert height[1] > height[0]


def test_when_bins_are_too_narrow_some_labels_are_left_out_but_the_marked_ones_stay():
    labels = CASES["three hundred categories"]
    (svg,) = charts(labels, history=False)
    shown = [text for text, _, _ in tick_labels(svg, set(labels))]
    assert 10 < len(shown) < len(labels)
    marked = re.findall(r"<text\b[^>]*font-weight: 700[^>]*>(c\d{3})</text>", svg)
    assert marked, "the bins that moved most keep their labels"
