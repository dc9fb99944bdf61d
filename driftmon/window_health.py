"""A window's health beside its drift (README, "Data health"): its volume and its freshness.

Both come from counts the run has anyway: the rows of the window against the
reference's rows for the same length (the lags' for a seasonal reference), and
the newest slice this run counted that held rows. Neither costs a query.
"""

from __future__ import annotations

from datetime import datetime

from driftmon.config import MonitorSettings, SeasonalReference
from driftmon.counting.incremental import SlicedWindow
from driftmon.counting.seasonal import SeasonalCounts
from driftmon.fingerprints import fingerprint
from driftmon.sources.profile import ReferenceProfile, WindowCounts
from driftmon.stats.volume import VolumeCheck, volume_check
from driftmon.windows import TimeRange


def window_volume(monitor: MonitorSettings, counts: WindowCounts, profile: ReferenceProfile,
                  seasonal: SeasonalCounts | None) -> VolumeCheck | None:
    """The window's rows against the reference's for the same length; None where the monitor has no check."""
    check = monitor.volume
    if check is None or not counts.columns:
        return None
    rows = float(counts.current_totals.max())
    # Every column counts every row (NULLs as __missing__), so any column's total is the row count.
    reference_rows = max((c.total for c in profile.columns), default=0.0)
    if isinstance(monitor.reference, SeasonalReference):
        span = seasonal.kept if seasonal is not None else None
    else:
        span = profile.range.end - profile.range.start
    share = (counts.window.end - counts.window.start) / span if span else 0.0
    if not share:  # every lag excluded: nothing to expect
        reference_rows, share = 0.0, 1.0
    return volume_check(rows, reference_rows, share, warning=check.warning, critical=check.critical,
                        significance=check.significance)


def newest_row_at(sliced: SlicedWindow | None, counts: WindowCounts) -> datetime | None:
    """The start of the newest slice this run counted that held rows (the window's start when it
    counts whole windows): some source row is at least this recent. None when it read no row."""
    if sliced is not None:
        starts = [start for start, found in sliced.fresh.items() if found.rows > 0]
        return max(starts) if starts else None
    return counts.window.start if counts.current_totals.size and counts.current_totals.max() > 0 else None


def health_row(monitor: MonitorSettings, window: TimeRange, volume: VolumeCheck | None,
               newest: datetime | None, results_fingerprint: str | None, now: datetime) -> dict | None:
    """The window_health row of a run (driftmon/store/models.py: WindowHealth)."""
    if volume is None and newest is None:
        return None
    check = monitor.volume
    return {
        "monitor": monitor.name, "window_start": window.start, "window_end": window.end,
        "rows": volume.rows if volume else 0.0, "reference_rows": volume.reference_rows if volume else 0.0,
        "expected": volume.expected if volume else None, "change": volume.change if volume else None,
        "p_value": volume.p_value if volume else None,
        "status": volume.status if volume else "off",  # volume: null keeps freshness only
        "threshold_warning": check.warning if check else None,
        "threshold_critical": check.critical if check else None,
        "newest_row_at": newest, "computed_at": now,
        "fingerprint": health_fingerprint(monitor, results_fingerprint),
    }


def health_fingerprint(monitor: MonitorSettings, results_fingerprint: str | None) -> str:
    """What made a health row: the results' settings and the volume check's."""
    check = monitor.volume
    return fingerprint({"results": results_fingerprint,
                        "volume": check.model_dump(mode="json") if check is not None else None})
