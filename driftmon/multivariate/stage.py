"""A monitor's multivariate drift for one window, beside its univariate drift (issue #27).

- **The fit** comes from the reference profile's range (the range its bins were cut
  from): ONE aggregate statement of moments, then imputation, count encoding, scaling
  and PCA in torch (driftmon/multivariate/fit.py). A second statement sums the
  reference's window-sized chunks, whose values calibrate the thresholds (NannyML's
  mean ± 3 σ). Both are stored (``multivariate_fits``) under the fingerprint of what
  shaped them and reused while it matches and the profile is complete.
- **Each window** is the sum of its slices' sums (``multivariate_slices``, keyed by the
  fit's content): a steady cycle counts only its new slice, in one statement; sealed
  slices are never read from the source again. A monitor whose slice grid does not fit
  counts its whole window.
- Nothing is written here: the pipeline stores the fit, the slices and the result in
  the run's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import sqlalchemy as sa
from sqlalchemy import Engine

from driftmon.config import MonitorSettings
from driftmon.counting.slices import is_sealed, lateness, slice_length
from driftmon.fingerprints import fingerprint
from driftmon.multivariate.codec import (
    empty_sums,
    fit_document,
    fit_from_document,
    fit_key,
    sums_document,
    sums_from_document,
)
from driftmon.multivariate.companion import MERGED_ENGINES, SliceCompanion
from driftmon.multivariate.cycle_statements import SliceSumsStatements, without_jit
from driftmon.multivariate.encoded_fit import fit_in_two_statements, grouped_fits
from driftmon.multivariate.fit import ReconstructionFit, fit_from_moments
from driftmon.multivariate.gaussian import gaussian_kl
from driftmon.multivariate.reconstruction import WindowSums, ensure_sqlite_sqrt, outside, reference_band
from driftmon.multivariate.result import MultivariateResult
from driftmon.multivariate.statements import fit_columns, read_moments
from driftmon.outcomes import CRITICAL, INSUFFICIENT, OK, WARNING
from driftmon.sources.events import EventsSource
from driftmon.sources.profile import ReferenceProfile
from driftmon.sources.slicing import slice_starts
from driftmon.stats.divergence import resolve_device
from driftmon.store import multivariate_queries as queries
from driftmon.store.database import single_statements
from driftmon.windows import TimeRange

log = logging.getLogger(__name__)

TOP_COLUMNS = 3  # columns named in a result's contributions


@dataclass(frozen=True)
class StoredFit:
    """A fit with what it was made from, and its reference chunks' values."""

    fingerprint: str
    key: str
    range: TimeRange
    fit: ReconstructionFit | None  # None: the reference held fewer than two rows
    chunks: dict  # {"reconstruction_error": [...], "gaussian_kl": [...], "residuals": [...], "rows": n}
    row: dict | None = None  # to store, when computed by this run


@dataclass
class WindowPlan:
    """What ``MultivariateStage.plan`` found before the cycle's count statement runs."""

    monitor: MonitorSettings
    source: EventsSource
    reference: TimeRange
    window: TimeRange
    fitted: StoredFit
    result_fingerprint: str
    recount: bool = False
    length: timedelta | None = None  # None: the monitor counts whole windows
    starts: list[datetime] = field(default_factory=list)
    stored: dict = field(default_factory=dict)  # slice start -> (counted_at, sealed, sums)
    needed: list[datetime] = field(default_factory=list)
    companion: SliceCompanion | None = None


@dataclass
class MultivariateWork:
    """What the run stores for its window's multivariate drift."""

    result: MultivariateResult
    fit_row: dict | None = None
    slice_rows: list[dict] = field(default_factory=list)
    ended_by: datetime | None = None


class MultivariateStage:
    """Fits, slice sums and window results of the monitors that write ``multivariate:``."""

    def __init__(self, results: Engine, clock: Callable[[], datetime], device: str = "cpu"):
        self.results = results
        self.clock = clock
        self.device = device
        self._fits: dict[str, StoredFit] = {}
        # (monitor, fit key) -> slice start -> (counted_at, sealed, sums)
        self._slices: dict[tuple[str, str], dict[datetime, tuple[datetime, bool, WindowSums]]] = {}
        self._sqrt_checked: set[int] = set()
        self.sums = SliceSumsStatements()

    def window(self, monitor: MonitorSettings, source: EventsSource, base: ReferenceProfile, reference: TimeRange,
               window: TimeRange, recount: bool = False) -> MultivariateWork:
        """``plan`` then ``finish``, with no count statement to ride in."""
        return self.finish(self.plan(monitor, source, base, reference, window, recount))

    def plan(self, monitor: MonitorSettings, source: EventsSource, base: ReferenceProfile, reference: TimeRange,
             window: TimeRange, recount: bool = False) -> WindowPlan:
        """The fit and the window's stored slices; ``companion`` offers the missing ones' sums to the
        cycle's count statement (companion.py), which runs before ``finish``."""
        self._ensure_sqrt(source)
        fitted = self._fit(monitor, source, base, recount)
        settings = monitor.multivariate
        result_fingerprint = fingerprint({"fit": fitted.key, "thresholds": settings.thresholds.model_dump(mode="json"),
                                          "kl_direction": monitor.kl_direction, "min_samples": monitor.min_samples})
        plan = WindowPlan(monitor, source, reference, window, fitted, result_fingerprint, recount)
        length = slice_length(monitor)
        if fitted.fit is None or length is None:
            return plan
        plan.length, plan.starts = length, slice_starts(window, length)
        plan.stored = self._stored_slices(monitor, fitted, window, plan.starts)
        plan.needed = [s for s in plan.starts if recount or s not in plan.stored or not plan.stored[s][1]]
        if plan.needed and source.engine.dialect.name in MERGED_ENGINES:
            plan.companion = SliceCompanion(fitted.fit, fitted.key, TimeRange(plan.needed[0], plan.needed[-1] + length),
                                            length)
        return plan

    def finish(self, plan: WindowPlan) -> MultivariateWork:
        monitor, fitted, window, reference = plan.monitor, plan.fitted, plan.window, plan.reference
        if fitted.fit is None:
            result = self._insufficient(monitor, window, reference, fitted, plan.result_fingerprint, 0.0,
                                        "the reference range holds fewer than two rows")
            return MultivariateWork(result, fitted.row)
        sums, rows, ended_by = self._window_sums(plan)
        result = self._result(monitor, window, reference, fitted, sums, plan.result_fingerprint)
        return MultivariateWork(result, fitted.row, rows, ended_by)

    # --- the fit ----------------------------------------------------------------------

    def _ensure_sqrt(self, source: EventsSource) -> None:
        if id(source.engine) not in self._sqrt_checked:
            ensure_sqlite_sqrt(source.engine)
            self._sqrt_checked.add(id(source.engine))

    def _fit(self, monitor: MonitorSettings, source: EventsSource, base: ReferenceProfile,
             recount: bool) -> StoredFit:
        settings = monitor.multivariate
        columns = fit_columns(source, settings.columns)
        shaped_by = fingerprint({"source": source.fingerprint, "columns": [[c.name, c.categorical] for c in columns],
                                 "n_components": settings.n_components, "window": monitor.window.size.total_seconds(),
                                 "range": [base.range.start.isoformat(), base.range.end.isoformat()]})
        cached = self._fits.get(monitor.name)
        if not recount and cached is not None and cached.fingerprint == shaped_by and base.complete:
            return cached
        if not recount and base.complete:
            with single_statements(self.results) as connection:
                stored = queries.stored_fit(connection, monitor.name)
            if stored is not None and stored["fingerprint"] == shaped_by:
                document = stored["fit"]
                fit = fit_from_document(document) if document else None
                found = StoredFit(shaped_by, stored["fit_key"], base.range, fit, stored["chunks"])
                self._fits[monitor.name] = found
                return found
        found = self._fit_from_source(monitor, source, base, columns, shaped_by)
        self._fits[monitor.name] = found
        return found

    def _fit_from_source(self, monitor, source, base: ReferenceProfile, columns, shaped_by: str) -> StoredFit:
        """The fit (one statement; two where categorical levels combine into many groups:
        encoded_fit.py) and the reference's window-sized chunks (one statement)."""
        reference = base.range
        with source.reader.reading(f"multivariate fit of reference {reference}") as connection, \
                without_jit(connection):
            if grouped_fits(columns, _profile_levels(base)):
                moments = read_moments(source, connection, columns, reference)
                fit = fit_from_moments(moments, monitor.multivariate.n_components) \
                    if moments.rows.sum() >= 2 else None
            else:
                source.statements += 2
                fit = fit_in_two_statements(connection, source.table, columns,
                                            sa.and_(*source._in_window(reference)), monitor.multivariate.n_components)
            chunks = {}
            document = fit_document(fit) if fit is not None else {}
            key = fit_key({"fit": document, "source": source.fingerprint})
            if fit is not None:
                size = monitor.window.size
                found = self.sums.read(source, connection, fit, key, reference, size)
                full = (reference.end - reference.start) // size
                chunks = self._chunk_values(monitor, fit, [found.get(i, empty_sums(len(columns)))
                                                           for i in range(full)])
        row = {"monitor": monitor.name, "fingerprint": shaped_by, "fit_key": key, "range_start": reference.start,
               "range_end": reference.end, "fit": document, "chunks": chunks, "computed_at": self.clock()}
        return StoredFit(shaped_by, key, reference, fit, chunks, row)

    def _chunk_values(self, monitor: MonitorSettings, fit: ReconstructionFit, chunks: list[WindowSums]) -> dict:
        """Each full chunk's reconstruction error and Gaussian KL (chunks with fewer than
        ``min_samples`` rows left out), and the reference's mean squared residuals per column."""
        errors, kls = [], []
        total = empty_sums(len(fit.columns))
        for chunk in chunks:
            total = total + chunk
            if chunk.n < max(monitor.min_samples, 2):
                continue
            errors.append(chunk.mean_error)
            kls.append(self._kl(monitor, fit, chunk)[0])
        residuals = residual_shares(fit, total).tolist() if total.n else [0.0] * len(fit.columns)
        return {"reconstruction_error": errors, "gaussian_kl": [k if np.isfinite(k) else None for k in kls],
                "residuals": residuals, "rows": total.n}

    def _kl(self, monitor: MonitorSettings, fit: ReconstructionFit, sums: WindowSums):
        """The Gaussian KL and the columns contributing most; None where the reference's
        covariance is singular (a constant or duplicated column): the KL is then undefined."""
        try:
            kl = gaussian_kl(fit, sums.n, sums.zsum, sums.zz, monitor.kl_direction, resolve_device(self.device))
        except ValueError:
            return None, []
        return kl.value, [[name, share] for name, share in kl.largest(TOP_COLUMNS)]

    # --- the window ---------------------------------------------------------------------

    def _stored_slices(self, monitor: MonitorSettings, fitted: StoredFit, window: TimeRange,
                       starts: list[datetime]) -> dict[datetime, tuple[datetime, bool, WindowSums]]:
        """The window's stored slices, read through the cache: only those counted since it was filled."""
        cache = self._slices.setdefault((monitor.name, fitted.key), {})
        with single_statements(self.results) as connection:
            versions = queries.slice_versions(connection, monitor.name, fitted.key, window)
            unread = [s for s, (counted, _) in versions.items() if cache.get(s, (None,))[0] != counted]
            for start, row in queries.load_slices(connection, monitor.name, fitted.key, unread).items():
                cache[start] = (row["counted_at"], bool(row["sealed"]), sums_from_document(row["sums"]))
        return {s: cache[s] for s in starts if s in versions and cache.get(s, (None,))[0] == versions[s][0]}

    def _window_sums(self, plan: WindowPlan) -> tuple[WindowSums, list[dict], datetime | None]:
        monitor, source, fitted, window = plan.monitor, plan.source, plan.fitted, plan.window
        d = len(fitted.fit.columns)
        if plan.length is None:
            with source.reader.reading(f"multivariate window {window}") as connection:
                found = self.sums.read(source, connection, fitted.fit, fitted.key, window, None)
            return found.get(0, empty_sums(d)), [], None
        length, stored = plan.length, plan.stored
        fresh: dict[datetime, WindowSums] = {}
        if plan.needed:
            span = TimeRange(plan.needed[0], plan.needed[-1] + length)
            found = plan.companion.result if plan.companion is not None else None
            if found is None:  # the count statement did not take it in: a statement of its own
                with source.reader.reading(f"multivariate slices {span}") as connection:
                    found = self.sums.read(source, connection, fitted.fit, fitted.key, span, length)
            fresh = {s: found.get(int((s - span.start) / length), empty_sums(d)) for s in plan.needed}
        now, late = self.clock(), lateness(monitor)
        rows = [{"monitor": monitor.name, "fit_key": fitted.key, "slice_start": s, "slice_end": s + length,
                 "sums": sums_document(sums), "rows": int(sums.n),
                 "sealed": is_sealed(TimeRange(s, s + length), late, now), "counted_at": now}
                for s, sums in fresh.items()]
        total = empty_sums(d)
        for s in plan.starts:
            total = total + (fresh[s] if s in fresh else stored[s][2])
        cache = self._slices.setdefault((monitor.name, fitted.key), {})
        for row in rows:
            cache[row["slice_start"]] = (row["counted_at"], row["sealed"], fresh[row["slice_start"]])
        for start in [s for s in cache if s < window.start]:
            del cache[start]  # only what the next window reads
        return total, rows, window.start - late

    def _result(self, monitor: MonitorSettings, window: TimeRange, reference: TimeRange, fitted: StoredFit,
                sums: WindowSums, result_fingerprint: str) -> MultivariateResult:
        settings = monitor.multivariate.thresholds
        chunks = fitted.chunks
        if settings.reconstruction_error is not None:
            band = (settings.reconstruction_error.lower, settings.reconstruction_error.upper)
        else:
            band = reference_band(chunks["reconstruction_error"], settings.sigmas) \
                if len(chunks["reconstruction_error"]) >= 2 else (None, None)
        if settings.gaussian_kl is not None:
            kl_threshold = settings.gaussian_kl.upper
        else:
            kls = [k for k in chunks["gaussian_kl"] if k is not None]
            kl_threshold = reference_band(kls, settings.sigmas)[1] if len(kls) >= 2 else None
        if sums.n < max(monitor.min_samples, 2):
            return self._insufficient(monitor, window, reference, fitted, result_fingerprint, sums.n,
                                      f"the window holds {int(sums.n)} rows (min_samples {monitor.min_samples})",
                                      band, kl_threshold)
        error, sampling = sums.mean_error, sums.sampling_error
        kl, kl_columns = self._kl(monitor, fitted.fit, sums)
        window_shares = residual_shares(fitted.fit, sums)
        # Moved most either way: a window whose error falls below its band has residuals that shrank.
        grown = np.argsort(-np.abs(window_shares - np.asarray(chunks["residuals"])), kind="stable")[:TOP_COLUMNS]
        names = [c.name for c in fitted.fit.columns]
        contributions = {"gaussian_kl": kl_columns,
                         "residuals": [[names[i], float(window_shares[i]), float(chunks["residuals"][i])]
                                       for i in grown]}
        note = None
        if band == (None, None) and settings.reconstruction_error is None:
            status = INSUFFICIENT
            note = (f"the reference range holds {len(chunks['reconstruction_error'])} window-sized chunk(s) "
                    f"with min_samples rows; calibrated thresholds need at least 2: give "
                    f"multivariate.thresholds.reconstruction_error")
        elif outside(error, band):
            status = CRITICAL
        elif kl is not None and kl_threshold is not None and kl > kl_threshold:
            status = WARNING
        else:
            status = OK
        return MultivariateResult(monitor.name, window, reference, sums.n, error, sampling, band[0], band[1], kl,
                                  kl_threshold, status, fitted.key, result_fingerprint, contributions, note)

    def _insufficient(self, monitor, window, reference, fitted: StoredFit, result_fingerprint: str, rows: float,
                      why: str, band=(None, None), kl_threshold: float | None = None) -> MultivariateResult:
        return MultivariateResult(monitor.name, window, reference, rows, None, None, band[0], band[1], None,
                                  kl_threshold, INSUFFICIENT, fitted.key, result_fingerprint, {}, why)


def _profile_levels(profile: ReferenceProfile) -> dict[str, int | None]:
    """Each categorical column's level count in the reference profile; None where it kept only the
    top ones (rows in ``__other__``), so the levels are not all known."""
    return {c.column: (len(c.categories) if not c.other else None) for c in profile.columns
            if c.kind == "categorical"}


def residual_shares(fit: ReconstructionFit, sums: WindowSums) -> np.ndarray:
    """Each column's mean squared residual ``r = z - V V^T z = W W^T z`` from the window's Σzzᵀ:
    ``diag(P Σzzᵀ P) / n`` with P = W Wᵀ, the projector off the kept components. Exact, so the SQL
    need not compute the residuals of every row (what ``explain`` names as moved most)."""
    w = fit.complement.detach().cpu().numpy()
    projector = w @ w.T
    return np.einsum("ij,jk,ki->i", projector, sums.zz, projector) / sums.n
