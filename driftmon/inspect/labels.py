"""Bin labels as people read them: numeric edges to 4 significant digits, long categories cut.

What is stored (and printed by ``--output json``) stays the exact label; this is
display only. ``numeric_labels`` stores edges as ``repr`` of a double
(``[103.89581668961603, +inf)``); a table or an axis shows ``[103.9, +inf)``.
Two bins never read the same: where 4 digits (or a cut category) make two
labels' texts equal, or a bin's two edges read the same, those labels get more
digits (a longer cut) until they differ, up to the exact label.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

DIGITS = 4  # significant digits of a bin edge as shown
AXIS_CUT = 18  # characters of a category on an axis or in a summary cell, the ellipsis included
_MAX_DIGITS = 17  # enough for any double: the edge as stored
_INTERVAL = re.compile(r"^([\[(])([^,]+), ([^)]+)\)$")


def edge_text(value: float, digits: int = DIGITS) -> str:
    """A bin edge to ``digits`` significant digits: ``103.9``, ``16880``, ``0.0001235``, ``1.235e+06``, ``+inf``."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    exponent = math.floor(math.log10(abs(value)))
    if not -5 <= exponent < 6:
        return f"{value:.{digits}g}"
    decimals = digits - 1 - exponent
    rounded = round(value, decimals)
    text = f"{rounded:.{max(decimals, 0)}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _edges(label: str) -> tuple[str, float, float] | None:
    """A numeric bin label's opening bracket and edges; None for a category."""
    match = _INTERVAL.match(label)
    if not match:
        return None
    try:
        low, high = float(match[2]), float(match[3])
    except ValueError:
        return None
    return match[1], low, high


def readable_label(label: str, digits: int = DIGITS, cut: int | None = None) -> str:
    """One label as shown: a numeric one's edges to ``digits`` significant digits; a category
    longer than ``cut`` characters cut to ``cut - 1`` and an ellipsis (None: never cut)."""
    parsed = _edges(label)
    if parsed is not None:
        opening, low, high = parsed
        return f"{opening}{edge_text(low, digits)}, {edge_text(high, digits)})"
    if cut is None or len(label) <= cut:
        return label
    return label[:cut - 1] + "…"


def readable_labels(labels: Sequence[str], cut: int | None = None, shown=str) -> list[str]:
    """Every label of one column as shown, no two alike unless the labels themselves are.

    ``shown`` maps a text to what the reader finally sees (``textsafe.visible``): texts
    are compared after it. Labels whose texts collide, and numeric labels whose two
    edges read the same, get one more digit (a cut 8 characters longer) each round.
    """
    digits = [DIGITS] * len(labels)
    cuts = [cut] * len(labels)
    texts = [shown(readable_label(label, DIGITS, cut)) for label in labels]
    while True:  # each round, every unclear label shows more, until it shows all
        seen = Counter(texts)
        unclear = [i for i, text in enumerate(texts)
                   if (seen[text] > 1 or _edges_alike(labels[i], digits[i]))
                   and not _exact(labels[i], digits[i], cuts[i])]
        if not unclear:
            return texts
        for i in unclear:
            digits[i] = min(digits[i] + 1, _MAX_DIGITS)
            cuts[i] = None if cuts[i] is None or cuts[i] + 8 >= len(labels[i]) else cuts[i] + 8
            texts[i] = shown(readable_label(labels[i], digits[i], cuts[i]))


def _edges_alike(label: str, digits: int) -> bool:
    """Whether a numeric label's two different edges read the same at ``digits``."""
    parsed = _edges(label)
    if parsed is None:
        return False
    _, low, high = parsed
    return low != high and edge_text(low, digits) == edge_text(high, digits)


def _exact(label: str, digits: int, cut: int | None) -> bool:
    """Whether more digits or a longer cut can show no more of the label."""
    return digits >= _MAX_DIGITS if _edges(label) is not None else cut is None
