"""The configuration: pydantic models of the README's "Configuration", and their resolution.

Unknown keys are errors (``extra="forbid"``); every cross-field rule lives
here; ``Config.resolved_monitors`` fills every monitor's unset settings from
``defaults``. Reading the file is driftmon/config_file.py's.
"""

from __future__ import annotations

import math
import os
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from driftmon import limits
from driftmon.urls import results_url_problem, scheme_problem

# compute.workers: "auto" (bench/README.md, "How many monitors one daemon sustains").
AUTO_WORKERS_PER_CPU = 4
AUTO_WORKERS_MAX = 32

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")
_DURATION_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}


def parse_duration(value: Any) -> timedelta:
    """``"5m"`` → 5 minutes; plain numbers are seconds. At most 100 years either way.

    Raises ValueError (never OverflowError) for anything else: ``9999999w`` fits a
    timedelta but not the datetime arithmetic of windows (driftmon/limits.py).
    """
    longest = limits.MAX_DURATION.total_seconds()
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"expected a duration like 30s, 5m, 1h or 7d, got {_shown(value)}")
    elif isinstance(value, int | float):
        if abs(value) > longest:  # exact for any int: no conversion to float
            raise ValueError(_too_long(value))
        duration = timedelta(seconds=value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"expected a duration like 30s, 5m, 1h or 7d, got {_shown(value)}")
        digits, unit = match.group(1), _DURATION_UNITS[match.group(2)]
        # 16 digits exceed 100 years in any unit; int() would refuse 4,300.
        if len(digits) > 15 or int(digits) * unit.total_seconds() > longest:
            raise ValueError(_too_long(value))
        duration = int(digits) * unit
    if abs(duration) > limits.MAX_DURATION:
        raise ValueError(_too_long(value))
    return duration


def _too_long(value: Any) -> str:
    return (f"{_shown(value)} is too long: durations are at most {limits.MAX_DURATION_TEXT}, "
            f"which keeps the times of windows and references within what dates can be")


def _shown(value: Any, width: int = 40) -> str:
    """``repr(value)``, cut to ``width`` characters: a 4,000-digit number is not echoed whole."""
    if isinstance(value, int) and abs(value) >= 10**width:
        return f"a number of {len(str(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling of a duration, as the config file writes it."""
    seconds = value.total_seconds()
    for unit in ("w", "d", "h", "m", "s"):
        size = _DURATION_UNITS[unit].total_seconds()
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(value / _DURATION_UNITS['ms'])}ms"


def _as_utc(value: datetime) -> datetime:
    # Naive timestamps are UTC by the spec's rule, so nothing depends on the host's zone.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, when_used="json"),
]
PositiveDuration = Annotated[Duration, Field(gt=timedelta(0))]
NonNegativeDuration = Annotated[Duration, Field(ge=timedelta(0))]
Statistic = Literal["kl", "psi", "js"]


def _slice_setting(value: Any) -> Any:
    if value in ("auto", "off"):
        return value
    return parse_duration(value)


# `auto` (derived from the schedule and the window: driftmon/counting/slices.py), `off`
# (count the whole window each cycle), or a duration.
SliceSetting = Annotated[
    Literal["auto", "off"] | PositiveDuration,
    BeforeValidator(_slice_setting),
    PlainSerializer(lambda v: v if isinstance(v, str) else format_duration(v), when_used="json"),
]
Significance = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
MinSamples = Annotated[int, Field(ge=1, le=10**12)]  # rows; bounded so that no database overflows on it


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(_Model):
    url: str = "sqlite:///driftmon.db"

    @field_validator("url")
    @classmethod
    def _results_url(cls, value: str) -> str:
        """A URL with a scheme, of SQLite or PostgreSQL; the message never quotes it (its password).

        Refused here, not at the first connection, so that explain, report and db status
        fail as check-config does (a hive:// one had them connect, and print a traceback).
        """
        problem = results_url_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class ComputeConfig(_Model):
    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda|cuda:\d+)$")] = "auto"
    dtype: Literal["float64", "float32"] = "float64"
    threads: Annotated[int, Field(ge=1, le=256)] = 1
    # Monitor runs side by side in `serve`; "auto": AUTO_WORKERS_PER_CPU per CPU (at most AUTO_WORKERS_MAX).
    workers: Annotated[int, Field(ge=1, le=256)] | Literal["auto"] = "auto"

    @property
    def worker_count(self) -> int:
        """``workers`` as a number: a run mostly waits on its databases (bench/README.md,
        capacity), so "auto" gives each CPU several runs to overlap."""
        if self.workers != "auto":
            return self.workers
        return min(AUTO_WORKERS_MAX, AUTO_WORKERS_PER_CPU * (os.cpu_count() or 1))

    @field_validator("device")
    @classmethod
    def _device_number(cls, value: str) -> str:
        """torch numbers CUDA devices 0 to 127 (``cuda:200`` became ``cuda:-56``, a longer one a ValueError)."""
        number = value.partition(":")[2]
        if number and (len(number) > 3 or int(number) > 127):
            raise ValueError("cuda:N takes a device number from 0 to 127")
        return value


class ServerConfig(_Model):
    host: str = "0.0.0.0"
    port: Annotated[int, Field(ge=1, le=65535)] = 9847
    shutdown_grace: NonNegativeDuration = timedelta(seconds=30)
    # How long a replica's claim on a window lasts unless renewed (every third of it)
    # while its run is alive: a crashed replica's window is taken over after this.
    lease_ttl: Annotated[Duration, Field(ge=timedelta(seconds=1))] = timedelta(seconds=30)
    # /report and /report/<monitor>: false answers 404 there (driftmon/serving/report_access.py).
    report: bool = True
    # The NAME of the environment variable holding the bearer token /report then requires
    # (never the token: it does not belong in the file). Unset: the pages need none.
    report_token_env: str | None = None

    @field_validator("report_token_env")
    @classmethod
    def _names_a_variable(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("expected the name of an environment variable (letters, digits, _), e.g. "
                             "DRIFTMON_REPORT_TOKEN; the token goes in that variable, never in this file")
        return value


class Schedule(_Model):
    """Exactly one of an interval (``every``) or a crontab line (``cron``), in UTC."""

    every: PositiveDuration | None = None
    cron: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Schedule:
        if (self.every is None) == (self.cron is None):
            raise ValueError("give exactly one of 'every' or 'cron'")
        return self

    @field_validator("cron")
    @classmethod
    def _valid_crontab(cls, value: str | None) -> str | None:
        if value is not None:
            from driftmon.cron import parse_crontab  # crontab(5)'s meaning, not APScheduler's

            try:
                parse_crontab(value)
            except ValueError as exc:
                raise ValueError(f"invalid crontab expression {value!r}: {exc}") from exc
        return value


def longest_interval(schedule: Schedule) -> timedelta:
    """The longest time between two ticks of ``schedule``: ``every``, or a bound for a crontab line.

    The bound is coarse but safe: a day when every day fires, a week when some weekday
    does, 62 days when days of the month are picked (31 comes in 7 months), a year when
    months are, and eight years for February 29th alone (1896 -> 1904).
    """
    if schedule.every is not None:
        return schedule.every
    from driftmon.cron import parse_crontab

    line = parse_crontab(schedule.cron)
    every_day, every_weekday = line.days >= set(range(1, 32)), line.weekdays >= set(range(7))
    if line.months < set(range(1, 13)):
        february_29th = line.months == {2} and min(line.days) >= 29 and not line.day_or
        return timedelta(days=366 * 8 + 1) if february_29th else timedelta(days=366)
    if not every_day and not line.day_or:
        return timedelta(days=62)
    return timedelta(days=1) if every_day and every_weekday else timedelta(days=7)


class Window(_Model):
    size: PositiveDuration = timedelta(hours=1)


class RollingReference(_Model):
    """``size`` before the window (less ``offset``), its end moving every ``refresh``.

    Its counts are summed from stored slices (driftmon/counting/rolling.py): moving the
    range reads nothing from the source. Its bins are cut from a profile of the same
    length once per ``rebin``, at a phase of its own per monitor so that not every
    monitor re-cuts at midnight.
    """

    kind: Literal["rolling"] = "rolling"
    size: PositiveDuration = timedelta(days=7)
    offset: NonNegativeDuration = timedelta(0)
    refresh: PositiveDuration = timedelta(days=1)
    rebin: PositiveDuration = timedelta(days=7)


class FixedReference(_Model):
    kind: Literal["fixed"]
    start: datetime
    end: datetime

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        """In UTC, and within driftmon/limits.py's years: 0001-01-01 overflowed the runs' arithmetic."""
        value = _as_utc(value)
        problem = limits.time_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _ordered(self) -> FixedReference:
        if self.start >= self.end:
            raise ValueError("reference 'start' must be before 'end'")
        return self


class ExcludedRange(_Model):
    """A stretch of time whose rows never enter a seasonal reference (an incident, Black Friday)."""

    start: datetime
    end: datetime

    _utc = field_validator("start", "end")(FixedReference._utc.__func__)

    @model_validator(mode="after")
    def _ordered(self) -> ExcludedRange:
        if self.start >= self.end:
            raise ValueError("exclude range 'start' must be before 'end'")
        return self


class ExcludedSchedule(_Model):
    """A recurring exclusion: ``duration`` from every tick of ``cron`` (UTC), e.g. weekends."""

    cron: str
    duration: PositiveDuration

    _valid_crontab = field_validator("cron")(Schedule._valid_crontab.__func__)


class SeasonalReference(_Model):
    """The same-phase window of each of the last ``lags`` periods, summed from stored slices.

    Its bins are cut once per ``refresh`` (default: one period) from the whole
    ``lags × period`` range before the window, excluded stretches left out, so every lag
    is binned alike (driftmon/counting/seasonal.py).
    """

    kind: Literal["seasonal"]
    period: PositiveDuration = timedelta(days=7)
    lags: Annotated[int, Field(ge=1, le=52)] = 4
    exclude: Annotated[list[ExcludedRange | ExcludedSchedule], Field(max_length=100)] = []
    refresh: PositiveDuration | None = None

    @property
    def effective_refresh(self) -> timedelta:
        return self.refresh or self.period


Reference = Annotated[RollingReference | FixedReference | SeasonalReference, Field(discriminator="kind")]


class VolumeCheck(_Model):
    """Each window's row count against the reference's, for the same length (``__volume__``).

    Both a relative change of at least ``warning``/``critical`` (either way) and an exact
    rate test at ``significance`` are needed: a quiet source with a handful of rows
    moves by 50 % on noise alone and must not page.
    """

    warning: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.15
    critical: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.3
    significance: Significance = 0.001

    @model_validator(mode="after")
    def _ordered(self) -> VolumeCheck:
        if self.warning > self.critical:
            raise ValueError(f"warning ({self.warning}) must not exceed critical ({self.critical})")
        return self


class PseudocountSmoothing(_Model):
    method: Literal["pseudocount"] = "pseudocount"
    alpha: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.5


class EpsilonSmoothing(_Model):
    method: Literal["epsilon"]
    epsilon: Annotated[float, Field(gt=0, lt=1)] = 1e-4


Smoothing = Annotated[PseudocountSmoothing | EpsilonSmoothing, Field(discriminator="method")]

_Threshold = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Thresholds(_Model):
    """Effective alert thresholds: ``warning ≤ value < critical`` is a warning."""

    statistic: Statistic = "kl"
    warning: _Threshold = 0.1
    critical: _Threshold = 0.25

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.warning > self.critical:
            raise ValueError(
                f"warning ({self.warning}) must not exceed critical ({self.critical})"
            )
        return self


class ThresholdOverride(_Model):
    warning: _Threshold | None = None
    critical: _Threshold | None = None


class MonitorThresholds(ThresholdOverride):
    statistic: Statistic | None = None
    per_feature: dict[str, ThresholdOverride] = {}


class ErrorBand(_Model):
    """Explicit thresholds of the reconstruction error: outside ``(lower, upper)`` alerts; a missing bound is none."""

    lower: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    upper: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _a_bound(self) -> ErrorBand:
        if self.lower is None and self.upper is None:
            raise ValueError("give lower, upper or both (leave the key out for thresholds calibrated on the reference)")
        if self.lower is not None and self.upper is not None and self.lower >= self.upper:
            raise ValueError(f"lower ({self.lower}) must be below upper ({self.upper})")
        return self


class KLBound(_Model):
    """An explicit upper threshold of the Gaussian KL (nats)."""

    upper: Annotated[float, Field(gt=0, allow_inf_nan=False)]


class MultivariateThresholds(_Model):
    """Left out, a bound is calibrated on the reference: NannyML's mean ± ``sigmas`` standard
    deviations of the statistic over the reference's window-sized chunks."""

    reconstruction_error: ErrorBand | None = None
    gaussian_kl: KLBound | None = None
    sigmas: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] = 3.0


class Multivariate(_Model):
    """Drift between columns (README, "Multivariate drift"): NannyML's data-reconstruction
    error and a Gaussian KL, from in-database moments. Off unless a monitor writes it."""

    # None: every feature of the monitor (categorical ones count-encoded).
    columns: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=2, max_length=200)] | None = None
    # A fraction keeps the fewest components explaining more than it (NannyML's 0.65); an int, that many.
    n_components: Annotated[float, Field(gt=0, lt=1)] | Annotated[int, Field(ge=1, le=200)] = 0.65
    thresholds: MultivariateThresholds = MultivariateThresholds()

    @field_validator("columns")
    @classmethod
    def _distinct(cls, columns: list[str] | None) -> list[str] | None:
        if columns is not None and len(set(columns)) != len(columns):
            raise ValueError("a column is listed twice")
        return columns


def multivariate_problem(source_kind: str, features: list[Feature], multivariate: Multivariate | None) -> str | None:
    """Why this multivariate block cannot apply to this monitor, or None."""
    if multivariate is None:
        return None
    if source_kind != "events":
        return "multivariate drift needs an events source: it is computed from the rows"
    watched = [f.column for f in features]
    columns = multivariate.columns if multivariate.columns is not None else watched
    unknown = [c for c in columns if c not in watched]
    if unknown:
        return f"multivariate.columns names column(s) not in features: {', '.join(unknown)}"
    if len(columns) < 2:
        return "multivariate drift needs at least two columns"
    if isinstance(multivariate.n_components, int) and multivariate.n_components > len(columns):
        return f"multivariate.n_components ({multivariate.n_components}) exceeds its {len(columns)} columns"
    return None


SEGMENT_PSEUDO_COLUMN = "segment"  # the traffic mix over segments, compared like a column


class Segments(_Model):
    """Per-segment drift (README, "Segments"): the population split by the values of ``by``."""

    by: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=8)]
    # The largest segments by reference rows; the rest is pooled as __other__.
    max: Annotated[int, Field(ge=1, le=1_000)] = 50
    # How many of the most drifted segments each (monitor, feature) exports with a segment label.
    top_k: Annotated[int, Field(ge=0, le=100)] = 5

    @field_validator("by")
    @classmethod
    def _distinct(cls, by: list[str]) -> list[str]:
        twice = sorted({c for c in by if by.count(c) > 1})
        if twice:
            raise ValueError(f"column(s) listed twice: {', '.join(twice)}")
        return by


class Defaults(_Model):
    schedule: Schedule = Schedule(every=timedelta(minutes=5))
    window: Window = Window()
    reference: Reference = RollingReference()
    smoothing: Smoothing = PseudocountSmoothing()
    kl_direction: Literal["reference_current", "current_reference"] = "reference_current"
    thresholds: Thresholds = Thresholds()
    min_samples: MinSamples = 100
    catch_up: Annotated[int, Field(ge=1, le=10_000)] = 1
    slice: SliceSetting = "auto"
    lateness: NonNegativeDuration | None = None  # None: one schedule interval
    # A column drifts only when its q-value is at most this; null: effect size alone.
    significance: Significance | None = 0.01
    segments: Segments | None = None
    # null: no volume check (events sources only).
    volume: VolumeCheck | None = VolumeCheck()


class Feature(_Model):
    column: Annotated[str, Field(min_length=1)]
    type: Literal["numeric", "categorical"] = "numeric"
    role: Literal["feature", "prediction"] = "feature"
    bins: Annotated[int, Field(ge=1, le=10_000)] | None = None
    binning: Literal["quantile", "uniform", "explicit"] | None = None
    range: tuple[float, float] | None = None
    edges: list[float] | None = None
    top_k: Annotated[int, Field(ge=1, le=10_000)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Feature:
        if self.type == "categorical":
            numeric_keys = ("bins", "binning", "range", "edges")
            used = [key for key in numeric_keys if getattr(self, key) is not None]
            if used:
                raise ValueError(f"{', '.join(used)} apply to numeric columns only")
            return self
        if self.top_k is not None:
            raise ValueError("top_k applies to categorical columns only")
        self._check_numeric_binning()
        return self

    def _check_numeric_binning(self) -> None:
        binning = self.effective_binning
        if binning == "explicit":
            if not self.edges:
                raise ValueError("binning 'explicit' needs 'edges'")
            if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
                raise ValueError("edges must be strictly increasing")
            if not all(map(math.isfinite, self.edges)):
                raise ValueError("edges must be finite numbers")
            if self.bins is not None and self.bins != len(self.edges) + 1:
                raise ValueError(f"{len(self.edges)} edges make {len(self.edges) + 1} bins")
        elif self.edges is not None:
            raise ValueError("edges apply to binning 'explicit' only")
        if self.range is not None:
            if binning != "uniform":
                raise ValueError("range applies to binning 'uniform' only")
            low, high = self.range
            if not (math.isfinite(low) and math.isfinite(high)):  # [-inf, inf] made bins of NaN edges
                raise ValueError(f"range [{low}, {high}] must be finite numbers")
            if not low < high:
                raise ValueError(f"range [{low}, {high}] must have low < high")

    @property
    def effective_binning(self) -> str:
        if self.binning is not None:
            return self.binning
        return "explicit" if self.edges is not None else "quantile"

    @property
    def effective_bins(self) -> int:
        if self.effective_binning == "explicit":
            return len(self.edges or []) + 1
        return self.bins if self.bins is not None else 10

    @property
    def effective_top_k(self) -> int:
        return self.top_k if self.top_k is not None else 20


_INT64 = 2**63


def _scalar_filter(value: Any) -> Any:
    """One string, number or boolean that every database compares the same way.

    An integer beyond 64 bits made SQLite's driver raise OverflowError in every run;
    NaN equals nothing in SQLite and itself in PostgreSQL.
    """
    if value is None or not isinstance(value, str | int | float | bool):
        raise ValueError("must be a single string, number or boolean (equality filters only)")
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT64 <= value < _INT64:
        raise ValueError(f"{_shown(value)} does not fit in 64 bits, as database integers do")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number: databases do not agree on what equals it")
    return value


_Filter = Annotated[Any, AfterValidator(_scalar_filter)]


# PostgreSQL's statement_timeout and MySQL's max_execution_time are 32-bit milliseconds.
_LONGEST_TIMEOUT = timedelta(milliseconds=2**31 - 1)


class _Source(_Model):
    url: str | None = None
    table: Annotated[str, Field(min_length=1)]
    schema_: Annotated[str | None, Field(alias="schema")] = None
    timestamp_column: Annotated[str, Field(min_length=1)]
    where: dict[str, _Filter] = {}
    timeout: PositiveDuration | None = None
    # A timestamp column of numbers is time since the epoch in this unit (default s).
    timestamp_unit: Literal["s", "ms", "us", "ns"] | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("url")
    @classmethod
    def _has_scheme(cls, value: str | None) -> str | None:
        """A URL with a scheme; the message never quotes it (``alice:PW@host/db`` holds a password).

        Empty is unset, as ``${SOURCE_DATABASE_URL:-}`` writes it: the source is database.url.
        """
        problem = scheme_problem(value) if value and value.strip() else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("timeout")
    @classmethod
    def _timeout_fits(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value > _LONGEST_TIMEOUT:
            raise ValueError("at most 24d: PostgreSQL and MySQL bound a statement by a 32-bit count of "
                             "milliseconds (24.8 days); leave it out for no bound")
        return value


class EventsSource(_Source):
    kind: Literal["events"]


class HistogramsSource(_Source):
    kind: Literal["histograms"]
    feature_column: str = "feature"
    bin_column: str = "bin"
    count_column: str = "count"
    role_column: str | None = None


Source = Annotated[EventsSource | HistogramsSource, Field(discriminator="kind")]


class Monitor(_Model):
    """One monitor as written; ``None`` means "inherit from defaults"."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,199}$")]
    source: Source
    features: list[Feature] = []
    schedule: Schedule | None = None
    window: Window | None = None
    reference: Reference | None = None
    smoothing: Smoothing | None = None
    kl_direction: Literal["reference_current", "current_reference"] | None = None
    thresholds: MonitorThresholds | None = None
    min_samples: MinSamples | None = None
    catch_up: Annotated[int, Field(ge=1, le=10_000)] | None = None
    slice: SliceSetting | None = None
    lateness: NonNegativeDuration | None = None
    # Written as null, it turns the test off for this monitor: see resolve_monitor.
    significance: Significance | None = None
    # Written as null, it turns the defaults' segments off for this monitor.
    segments: Segments | None = None
    # Written as null, it turns the volume check off for this monitor.
    volume: VolumeCheck | None = None
    multivariate: Multivariate | None = None

    @model_validator(mode="after")
    def _columns(self) -> Monitor:
        columns = [feature.column for feature in self.features]
        duplicates = sorted({c for c in columns if columns.count(c) > 1})
        if duplicates:
            raise ValueError(f"column(s) listed twice in features: {', '.join(duplicates)}")
        if self.source.kind == "events" and not self.features:
            raise ValueError("an events monitor needs at least one entry in 'features'")
        unknown = sorted(set(self.thresholds.per_feature if self.thresholds else {}) - set(columns))
        if unknown and self.source.kind == "events":
            raise ValueError(
                f"thresholds.per_feature names column(s) not in features: {', '.join(unknown)}"
            )
        return self


def segments_problem(source_kind: str, features: list[Feature], segments: Segments | None) -> str | None:
    """Why these segments cannot apply to this monitor, or None."""
    if segments is None:
        return None
    if source_kind != "events":
        return "segments need an events source: a histograms table holds no per-row segment values"
    columns = {f.column for f in features}
    watched = sorted(columns & set(segments.by))
    if watched:
        return f"segments.by names watched column(s) {', '.join(watched)}: a column cannot segment itself"
    if SEGMENT_PSEUDO_COLUMN in columns:
        return (f"a feature named {SEGMENT_PSEUDO_COLUMN!r} would clash with the segment mix "
                f"pseudo-column of a segmented monitor: rename it with a view")
    return None


def seasonal_problem(source_kind: str, window: Window | None, reference) -> str | None:
    """Why this seasonal reference cannot serve this monitor, or None."""
    if not isinstance(reference, SeasonalReference):
        return None
    if source_kind != "events":
        return "a seasonal reference needs an events source: it is summed from stored slices"
    if window is not None and window.size > reference.period:
        return (f"the window ({window.size}) is longer than the seasonal period ({reference.period}): "
                f"the lags would overlap the window they are compared with")
    return None


class MonitorSettings(_Model):
    """A monitor with every inherited setting resolved: what the pipeline runs."""

    name: str
    source: EventsSource | HistogramsSource
    features: list[Feature]
    schedule: Schedule
    window: Window
    reference: RollingReference | FixedReference | SeasonalReference
    smoothing: PseudocountSmoothing | EpsilonSmoothing
    kl_direction: Literal["reference_current", "current_reference"]
    thresholds: Thresholds
    per_feature: dict[str, Thresholds]
    min_samples: int
    catch_up: int
    slice: Literal["auto", "off"] | timedelta = "auto"
    lateness: timedelta | None = None
    significance: float | None = 0.01
    segments: Segments | None = None
    volume: VolumeCheck | None = None
    multivariate: Multivariate | None = None

    @model_validator(mode="after")
    def _segments_fit(self) -> MonitorSettings:
        problem = multivariate_problem(self.source.kind, self.features, self.multivariate)
        if problem:
            raise ValueError(f"monitor {self.name!r}: {problem}")
        problem = segments_problem(self.source.kind, self.features, self.segments)
        if problem:
            raise ValueError(f"monitor {self.name!r}: {problem}")
        problem = seasonal_problem(self.source.kind, self.window, self.reference)
        if problem:
            raise ValueError(f"monitor {self.name!r}: {problem}")
        return self

    def thresholds_for(self, column: str) -> Thresholds:
        return self.per_feature.get(column, self.thresholds)


class Config(_Model):
    database: DatabaseConfig = DatabaseConfig()
    compute: ComputeConfig = ComputeConfig()
    server: ServerConfig = ServerConfig()
    defaults: Defaults = Defaults()
    monitors: list[Monitor] = []

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        return self

    @model_validator(mode="after")
    def _segments_apply(self) -> Config:
        for i, monitor in enumerate(self.monitors):
            segments = monitor.segments if "segments" in monitor.model_fields_set else self.defaults.segments
            problem = segments_problem(monitor.source.kind, monitor.features, segments)
            problem = problem or multivariate_problem(monitor.source.kind, monitor.features, monitor.multivariate)
            problem = problem or seasonal_problem(monitor.source.kind, monitor.window or self.defaults.window,
                                                  monitor.reference or self.defaults.reference)
            if problem:
                raise ValueError(f"monitors[{i}] ({monitor.name}): {problem}")
        return self

    @field_validator("monitors")
    @classmethod
    def _something_to_monitor(cls, monitors: list[Monitor]) -> list[Monitor]:
        """A file that writes ``monitors: []`` sets up a daemon that watches nothing: refused.

        Runs only when the key is given, so ``Config()`` and a file without it (a
        config for ``db upgrade`` alone) stay valid; check-config warns about those.
        """
        if not monitors:
            raise ValueError("the list is empty: there is nothing to monitor; add at least one monitor "
                             "(README, \"Configuration\")")
        return monitors

    def resolved_monitors(self) -> list[MonitorSettings]:
        """Every monitor with its unset settings filled from ``defaults``."""
        return [resolve_monitor(monitor, self.defaults) for monitor in self.monitors]

    def source_url(self, source: EventsSource | HistogramsSource) -> str:
        return source.url or self.database.url


def resolve_monitor(monitor: Monitor, defaults: Defaults) -> MonitorSettings:
    thresholds = merge_thresholds(defaults.thresholds, monitor.thresholds)
    overrides = monitor.thresholds.per_feature if monitor.thresholds else {}
    return MonitorSettings(
        name=monitor.name,
        source=monitor.source,
        features=monitor.features,
        schedule=monitor.schedule or defaults.schedule,
        window=monitor.window or defaults.window,
        reference=monitor.reference or defaults.reference,
        smoothing=monitor.smoothing or defaults.smoothing,
        kl_direction=monitor.kl_direction or defaults.kl_direction,
        thresholds=thresholds,
        per_feature={c: merge_thresholds(thresholds, o) for c, o in overrides.items()},
        min_samples=monitor.min_samples or defaults.min_samples,
        catch_up=monitor.catch_up or defaults.catch_up,
        slice=monitor.slice or defaults.slice,
        lateness=monitor.lateness if monitor.lateness is not None else defaults.lateness,
        significance=(monitor.significance if "significance" in monitor.model_fields_set
                      else defaults.significance),
        segments=monitor.segments if "segments" in monitor.model_fields_set else defaults.segments,
        volume=_volume_check(monitor, defaults),
        multivariate=monitor.multivariate,
    )


def _volume_check(monitor: Monitor, defaults: Defaults) -> VolumeCheck | None:
    """The monitor's volume check: its own, else the defaults'. Unless one of them writes it, a
    fixed reference has none: a training set's row count says nothing of tonight's traffic."""
    if monitor.source.kind != "events":
        return None
    if "volume" in monitor.model_fields_set:
        return monitor.volume
    reference = monitor.reference or defaults.reference
    if isinstance(reference, FixedReference) and "volume" not in defaults.model_fields_set:
        return None
    return defaults.volume


def merge_thresholds(base: Thresholds, override: ThresholdOverride | None) -> Thresholds:
    if override is None:
        return base
    changes = override.model_dump(include={"statistic", "warning", "critical"}, exclude_none=True)
    return Thresholds(**{**base.model_dump(), **changes})
