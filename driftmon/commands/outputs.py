"""What run-once and backfill print: a table for people, JSON for scripts (README, "Commands").

Column names, roles and error messages can come from the data: the table shows
them through ``driftmon.textsafe.visible``, the JSON exactly.

A monitor with a volume check adds one ``"column": "__volume__"`` object (README,
"Data health") after its columns, and one ``volume`` line to the table; a monitor with
``multivariate:`` one ``"column": "__multivariate__"`` object (README, "Multivariate drift")
and one ``multivariate`` line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

from driftmon.config import MonitorSettings
from driftmon.config import VolumeCheck as VolumeSettings
from driftmon.multivariate.result import MULTIVARIATE_COLUMN, MultivariateResult
from driftmon.outcomes import ColumnResult, RunOutcome
from driftmon.textsafe import visible

_HEADER = ("monitor", "column", "role", "samples (ref / cur)", "KL", "PSI", "JS", "p", "q", "status")


VOLUME_COLUMN = "__volume__"


def as_json(outcomes: list[RunOutcome], monitors: Iterable[MonitorSettings] = ()) -> str:
    """One object per (monitor, column, segment) and a ``__volume__`` object per monitor with a
    volume check, then one per failed monitor run: the public contract of ``run-once --output
    json`` (README, "Commands"). ``segment`` is null for the whole population, else ``{column:
    value}``. ``monitors``: the settings the volume object takes its thresholds from (the
    outcome does not carry them); a monitor not among them gets null thresholds."""
    volume_settings = {m.name: m.volume for m in monitors}
    records = []
    for outcome in outcomes:
        records += [_json_object(r) for r in outcome.results]
        if outcome.volume is not None:
            records.append(_volume_object(outcome, volume_settings.get(outcome.monitor)))
        if outcome.multivariate is not None:
            records.append(multivariate_object(outcome.multivariate))
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


def _volume_object(outcome: RunOutcome, settings: VolumeSettings | None) -> dict:
    """The window's row count against the reference's expected count (driftmon.stats.volume)."""
    volume = outcome.volume
    return {
        "monitor": outcome.monitor,
        "column": VOLUME_COLUMN,
        "role": "volume",
        "segment": None,  # the whole population's rows
        "window_start": outcome.window.start.isoformat(),
        "window_end": outcome.window.end.isoformat(),
        "status": volume.status,
        "rows": _number(volume.rows),
        "expected": volume.expected,
        "reference_rows": _number(volume.reference_rows),
        "change": volume.change,
        "p_value": volume.p_value,
        "threshold_warning": None if settings is None else settings.warning,
        "threshold_critical": None if settings is None else settings.critical,
        "newest_row_at": None if outcome.newest_row_at is None else outcome.newest_row_at.isoformat(),
    }


def multivariate_object(result: MultivariateResult) -> dict:
    """The window's drift between columns (driftmon/multivariate/result.py)."""
    return {
        "monitor": result.monitor,
        "column": MULTIVARIATE_COLUMN,
        "role": "multivariate",
        "segment": None,  # the whole population's rows
        "window_start": result.window.start.isoformat(),
        "window_end": result.window.end.isoformat(),
        "reference_start": result.reference.start.isoformat(),
        "reference_end": result.reference.end.isoformat(),
        "status": result.status,
        "rows": _number(result.rows),
        "reconstruction_error": _finite(result.reconstruction_error),
        "sampling_error": _finite(result.sampling_error),
        "threshold_lower": result.threshold_lower,
        "threshold_upper": result.threshold_upper,
        "gaussian_kl": _finite(result.gaussian_kl),
        "gaussian_kl_threshold": result.gaussian_kl_threshold,
        "contributions": result.contributions,
        "note": result.note,
    }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


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
    lines += [volume_line(o) for o in outcomes if o.volume is not None]
    lines += [multivariate_line(o.multivariate) for o in outcomes if o.multivariate is not None]
    lines += [f"{o.monitor}: FAILED: {o.error}" for o in outcomes if o.status != "ok"]
    windows = sorted({f"{o.monitor} {o.window}" for o in outcomes})
    return "\n".join(visible(line) for line in [*lines, "", "windows: " + "; ".join(windows)])


def volume_line(outcome: RunOutcome) -> str:
    """``fraud: volume critical: 240 rows, expected 400 (-40.0 %), p 1.2e-12, newest row at ...``."""
    volume = outcome.volume
    expected = "-" if volume.expected is None else _number(round(volume.expected, 1))
    change = "" if volume.change is None else f" ({100 * volume.change:+.1f} %)"
    newest = "-" if outcome.newest_row_at is None else outcome.newest_row_at.isoformat()
    return (f"{outcome.monitor}: volume {volume.status}: {_number(volume.rows)} rows, expected {expected}{change}, "
            f"p {_probability(volume.p_value)}, newest row at {newest}")


def multivariate_line(result: MultivariateResult) -> str:
    """``shop: multivariate critical: reconstruction error 0.7154 ± 0.0165, band (0.7395, 0.8628); Gaussian KL ...``."""
    if result.reconstruction_error is None:
        return f"{result.monitor}: multivariate {result.status}: {result.note or 'no value'}"
    band = f"({_stat(result.threshold_lower)}, {_stat(result.threshold_upper)})"
    kl = (f"; Gaussian KL {_stat(_finite(result.gaussian_kl))} (threshold {_stat(result.gaussian_kl_threshold)})"
          if result.gaussian_kl is not None else "")
    moved = ", ".join(column for column, *_ in result.contributions.get("residuals", []))
    note = f"; {result.note}" if result.note else ""
    return (f"{result.monitor}: multivariate {result.status}: reconstruction error "
            f"{_stat(result.reconstruction_error)} ± {_stat(_finite(result.sampling_error))}, band {band}{kl}; "
            f"residuals moved most in {moved or '-'}{note}")


def _samples(result: ColumnResult) -> str:
    """Both windows' observations, reference first as `driftmon explain` shows them: an
    ``insufficient_data`` status may come from either, and 0 in the reference is worth seeing."""
    return f"{_number(result.samples_reference)} / {_number(result.samples_current)}"


def _stat(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _probability(value: float | None) -> str:
    """Three significant digits: p-values of strong drift are far below 0.0001."""
    return "-" if value is None else f"{value:.3g}"
