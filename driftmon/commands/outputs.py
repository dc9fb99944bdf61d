"""What run-once and backfill print: a table for people, JSON for scripts (README, "Commands").

Column names, roles and error messages can come from the data: the table shows
them through ``driftmon.textsafe.visible``, the JSON exactly.
"""

from __future__ import annotations

import json

from driftmon.pipeline import ColumnResult, RunOutcome
from driftmon.textsafe import visible

_HEADER = ("monitor", "column", "role", "samples (ref / cur)", "KL", "PSI", "JS", "p", "q", "status")


def as_json(outcomes: list[RunOutcome]) -> str:
    """One object per (monitor, column, segment), then one per failed monitor run: the public
    contract of ``run-once --output json`` (README, "Commands"). ``segment`` is null for the
    whole population, else ``{column: value}``."""
    records = [_json_object(r) for o in outcomes for r in o.results]
    records += [_failure_object(o) for o in outcomes if o.status != "ok"]
    return json.dumps(records, indent=2)


def _json_object(result: ColumnResult) -> dict:
    return {
        "monitor": result.monitor,
        "column": result.column,
        "role": result.role,
        "window_start": result.window.start.isoformat(),
        "window_end": result.window.end.isoformat(),
        "reference_start": result.reference.start.isoformat(),
        "reference_end": result.reference.end.isoformat(),
        "samples_current": _number(result.samples_current),
        "samples_reference": _number(result.samples_reference),
        "missing_ratio": result.missing_ratio,
        "kl": result.kl,
        "psi": result.psi,
        "js": result.js,
        "p_value": result.p_value,
        "q_value": result.q_value,
        "status": result.status,
        "segment": dict(result.segment) if result.segment else None,
    }


def _failure_object(outcome: RunOutcome) -> dict:
    return {"monitor": outcome.monitor, "column": None, "status": "failed", "error": outcome.error}


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def as_table(outcomes: list[RunOutcome]) -> str:
    """One row per (monitor, column), then one line per failed monitor run and the windows computed.

    Every line goes through ``visible``: nothing from the data can start a line of its own,
    move the cursor or reorder what the terminal shows.
    """
    segmented = any(r.segment for o in outcomes for r in o.results)
    header = (*_HEADER[:2], "segment", *_HEADER[2:]) if segmented else _HEADER
    rows = [header]
    for outcome in outcomes:
        for r in outcome.results:
            # Escaped before the widths are measured, so that the columns line up as shown.
            where = (visible(r.segment_key or "(all)"),) if segmented else ()
            rows.append((visible(r.monitor), visible(r.column), *where, visible(r.role), _samples(r),
                         _stat(r.kl), _stat(r.psi), _stat(r.js), _probability(r.p_value),
                         _probability(r.q_value), visible(r.status)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines += [f"{o.monitor}: FAILED: {o.error}" for o in outcomes if o.status != "ok"]
    windows = sorted({f"{o.monitor} {o.window}" for o in outcomes})
    return "\n".join(visible(line) for line in [*lines, "", "windows: " + "; ".join(windows)])


def _samples(result: ColumnResult) -> str:
    """Both windows' observations, reference first as `driftmon explain` shows them: an
    ``insufficient_data`` status may come from either, and 0 in the reference is worth seeing."""
    return f"{_number(result.samples_reference)} / {_number(result.samples_current)}"


def _stat(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _probability(value: float | None) -> str:
    """Three significant digits: p-values of strong drift are far below 0.0001."""
    return "-" if value is None else f"{value:.3g}"
