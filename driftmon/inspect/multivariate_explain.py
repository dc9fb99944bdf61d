"""`driftmon explain`'s multivariate section: the explained window's drift between columns.

Read from the stored ``multivariate_results`` row of the same window (the one
``driftmon.inspect.explain`` explains, by its end). It shows the reconstruction
error with its sampling error and band, the Gaussian KL with its threshold, the
status and why, then the columns that moved most, as the run stored them
(driftmon/multivariate/stage.py, the top 3):

- residuals: each column's mean squared reconstruction residual per row in the
  window and in the reference, ranked by how much it moved either way (|window −
  reference|: a window whose error fell below its band has residuals that shrank);
- Gaussian KL: each column's non-negative term of the KL in nats (the terms of
  every column add up to the KL) and its share of it.

A monitor with neither ``multivariate`` configured nor a stored result has no
section (and no ``"multivariate"`` key in the JSON); one configured but without a
result for the window has a line saying so (``"multivariate": null``). Column names
come from the config, but lines go through ``visible`` as explain's do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Connection

from driftmon.config import MonitorSettings
from driftmon.inspect.explain import exact_number
from driftmon.store.multivariate_queries import results_between
from driftmon.textsafe import visible
from driftmon.windows import TimeRange

NOT_STORED = "no multivariate result stored for this window (computed before multivariate was configured?)"


@dataclass(frozen=True)
class MultivariateSection:
    """The explained window's stored multivariate row (None: nothing stored for it)."""

    row: dict | None


def load_section(connection: Connection, monitor: MonitorSettings, window: TimeRange) -> MultivariateSection | None:
    """The section of the window ending at ``window.end``; None where the monitor has no multivariate drift
    (not configured, and nothing stored for the window)."""
    found = [r for r in results_between(connection, monitor.name, window.start, window.end)
             if r["window_end"] == window.end]
    if not found and monitor.multivariate is None:
        return None
    return MultivariateSection(found[0] if found else None)


# --- what it says ------------------------------------------------------------------------


def verdict(row: dict) -> str:
    """Why the window has its status."""
    error, lower, upper = row["reconstruction_error"], row["threshold_lower"], row["threshold_upper"]
    kl, kl_threshold = row["gaussian_kl"], row["gaussian_kl_threshold"]
    if row["status"] == "insufficient_data":
        if error is None:
            return "no value: the window or the reference holds fewer rows than min_samples"
        return "no band: the reference holds fewer than two window-sized chunks to calibrate on"
    if error is not None and lower is not None and error < lower:
        return "the reconstruction error is below its band"
    if error is not None and upper is not None and error > upper:
        return "the reconstruction error is above its band"
    if kl is not None and kl_threshold is not None and kl > kl_threshold:
        return "the Gaussian KL is above its threshold (the reconstruction error is within its band)"
    return "the reconstruction error is within its band and the Gaussian KL under its threshold"


def residuals(row: dict) -> list[dict]:
    """The columns whose mean squared residual moved most, with the change against the reference."""
    return [{"column": column, "window": window, "reference": reference, "change": window - reference,
             "relative_change": (window - reference) / reference if reference else None}
            for column, window, reference in (row["contributions"] or {}).get("residuals", [])]


def kl_columns(row: dict) -> list[dict]:
    """The columns with the largest terms of the Gaussian KL, in nats, with their share of it."""
    kl = row["gaussian_kl"]
    return [{"column": column, "contribution": term, "share_of_kl": term / kl if kl else None}
            for column, term in (row["contributions"] or {}).get("gaussian_kl", [])]


# --- output ------------------------------------------------------------------------------


def as_dict(section: MultivariateSection) -> dict | None:
    """explain's ``"multivariate"`` value: null where nothing is stored for the window."""
    row = section.row
    if row is None:
        return None
    return {
        "window_start": row["window_start"].isoformat(), "window_end": row["window_end"].isoformat(),
        "reference_start": row["reference_start"].isoformat(), "reference_end": row["reference_end"].isoformat(),
        "status": row["status"], "why": verdict(row), "rows": exact_number(row["rows"]),
        "reconstruction_error": row["reconstruction_error"], "sampling_error": row["sampling_error"],
        "threshold_lower": row["threshold_lower"], "threshold_upper": row["threshold_upper"],
        "gaussian_kl": row["gaussian_kl"], "gaussian_kl_threshold": row["gaussian_kl_threshold"],
        "residuals": residuals(row), "gaussian_kl_columns": kl_columns(row),
    }


def as_json(document: dict, section: MultivariateSection | None) -> str:
    """explain's JSON document with its ``"multivariate"`` key, where the monitor has a section."""
    if section is not None:
        document = {**document, "multivariate": as_dict(section)}
    return json.dumps(document, indent=2)


def as_table(table: str, section: MultivariateSection | None) -> str:
    """explain's table with the section below it, where the monitor has one."""
    if section is None:
        return table
    return table + "\n\n" + "\n".join(visible(line) for line in as_lines(section))


def as_lines(section: MultivariateSection) -> list[str]:
    row = section.row
    if row is None:
        return [f"multivariate: {NOT_STORED}"]
    lines = [f"multivariate (drift between columns): {row['status']}: {verdict(row)}",
             f"  reconstruction error {_g(row['reconstruction_error'])}, sampling error {_g(row['sampling_error'])}, "
             f"band [{_g(row['threshold_lower'])}, {_g(row['threshold_upper'])}]",
             f"  Gaussian KL {_g(row['gaussian_kl'])} (threshold {_g(row['gaussian_kl_threshold'])})"
             f"  rows {exact_number(row['rows'])}"]
    grown = residuals(row)
    if grown:
        lines.append("  columns whose residuals moved most (mean squared residual per row):")
        lines += _table(("column", "window", "reference", "change", "relative"),
                        [(r["column"], _g(r["window"]), _g(r["reference"]), _signed(r["change"]),
                          "-" if r["relative_change"] is None else f"{100 * r['relative_change']:+.1f}%")
                         for r in grown])
    terms = kl_columns(row)
    if terms:
        lines.append("  columns contributing most to the Gaussian KL (their terms add up to it over all columns):")
        lines += _table(("column", "kl term", "of kl"),
                        [(t["column"], _g(t["contribution"]),
                          "-" if t["share_of_kl"] is None else f"{100 * t['share_of_kl']:.1f}%") for t in terms])
    return lines


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    rows = [header, *[tuple(visible(cell) for cell in row) for row in rows]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return ["    " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
            for row in rows]


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _signed(value: float) -> str:
    return f"{value:+.4g}"
