"""Configuration: every rule of the README's "Configuration", and errors that name the key path."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from driftmon.config import FixedReference, RollingReference, format_duration, parse_duration
from driftmon.config_file import load_config, parse_config
from driftmon.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

MINIMAL = {
    "monitors": [
        {
            "name": "m",
            "source": {"kind": "events", "table": "t", "timestamp_column": "ts"},
            "features": [{"column": "x"}],
        }
    ]
}

SPEC_EXAMPLE = """
database:
  url: sqlite:///driftmon.db
compute: {device: auto, dtype: float64, threads: 1}
server: {host: 0.0.0.0, port: 9847}
defaults:
  schedule: {every: 5m}
  window: {size: 1h}
  reference: {kind: rolling, size: 7d, offset: 0s, refresh: 1d}
  smoothing: {method: pseudocount, alpha: 0.5}
  kl_direction: reference_current
  thresholds: {statistic: kl, warning: 0.1, critical: 0.25}
  min_samples: 100
monitors:
  - name: fraud_model
    source:
      kind: events
      url: ${SOURCE_DATABASE_URL}
      table: inference_log
      schema: public
      timestamp_column: ts
      where: {model_version: v3}
    features:
      - {column: amount, type: numeric, bins: 10, binning: quantile}
      - {column: country, type: categorical, top_k: 20}
      - {column: score, type: numeric, role: prediction, binning: uniform, range: [0, 1], bins: 10}
    thresholds: {warning: 0.1, critical: 0.25, per_feature: {amount: {warning: 0.2, critical: 0.5}}}
  - name: ranker
    source:
      kind: histograms
      table: feature_histograms
      timestamp_column: bucket_start
      feature_column: feature
      bin_column: bin
      count_column: count
      role_column: role
"""


def errors_of(raw: dict, environ: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, environ or {})
    return info.value.problems


def with_change(path: str, value) -> dict:
    """MINIMAL with one key (dotted path, list indices as numbers) set to value."""
    raw = copy.deepcopy(MINIMAL)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = raw
    for part in parents:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    node[last] = value
    return raw


def test_spec_example_loads_with_inheritance():
    config = parse_config(yaml.safe_load(SPEC_EXAMPLE), {"SOURCE_DATABASE_URL": "postgresql://u@h/db"})
    fraud, ranker = config.resolved_monitors()
    assert fraud.source.url == "postgresql://u@h/db"
    assert fraud.source.schema_ == "public"
    assert fraud.source.where == {"model_version": "v3"}
    assert fraud.schedule.every == timedelta(minutes=5)
    assert fraud.window.size == timedelta(hours=1)
    assert fraud.reference == RollingReference(size=timedelta(days=7), refresh=timedelta(days=1))
    assert fraud.thresholds_for("amount").warning == 0.2
    assert fraud.thresholds_for("amount").critical == 0.5
    assert fraud.thresholds_for("country").critical == 0.25
    assert fraud.features[2].role == "prediction"
    assert fraud.features[2].range == (0.0, 1.0)
    assert ranker.source.kind == "histograms"
    assert ranker.source.role_column == "role"
    assert config.source_url(ranker.source) == "sqlite:///driftmon.db"


def test_shipped_config_is_valid():
    config = load_config(ROOT / "config.yaml", environ={})
    assert [m.name for m in config.monitors]


def test_empty_file_gives_defaults():
    config = parse_config(None, {})
    assert config.database.url == "sqlite:///driftmon.db"
    assert config.compute.threads == 1
    assert config.server.port == 9847
    assert config.monitors == []


def test_monitor_overrides_defaults():
    raw = copy.deepcopy(MINIMAL)
    raw["defaults"] = {"min_samples": 50, "thresholds": {"statistic": "psi", "warning": 0.2, "critical": 0.4}}
    raw["monitors"][0].update(
        min_samples=7,
        schedule={"cron": "*/10 * * * *"},
        thresholds={"critical": 0.9},
        kl_direction="current_reference",
        smoothing={"method": "epsilon"},
        reference={"kind": "fixed", "start": "2024-01-01", "end": "2024-02-01T00:00:00+01:00"},
    )
    (monitor,) = parse_config(raw, {}).resolved_monitors()
    assert monitor.min_samples == 7
    assert monitor.schedule.cron == "*/10 * * * *" and monitor.schedule.every is None
    assert (monitor.thresholds.statistic, monitor.thresholds.warning, monitor.thresholds.critical) == (
        "psi",
        0.2,
        0.9,
    )
    assert monitor.kl_direction == "current_reference"
    assert monitor.smoothing.epsilon == 1e-4
    assert monitor.reference == FixedReference(
        kind="fixed",
        start=datetime(2024, 1, 1, tzinfo=UTC),
        end=datetime(2024, 1, 31, 23, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", timedelta(seconds=30)), ("5m", timedelta(minutes=5)), ("1h", timedelta(hours=1)),
     ("7d", timedelta(days=7)), ("2w", timedelta(weeks=2)), ("250ms", timedelta(milliseconds=250)),
     (90, timedelta(seconds=90))],
)
def test_durations(text, expected):
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("text", ["5", "5 minutes", "-5m", "1.5h", "", "m"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("raw", "path", "words"),
    [
        (with_change("monitors.0.features.0.bins", -3), "monitors[0].features[0].bins", "greater than or equal to 1"),
        (with_change("monitors.0.features.0.bnis", 3), "monitors[0].features[0].bnis", "unknown key"),
        (with_change("databse", {"url": "x"}), "databse", "unknown key"),
        (with_change("monitors.0.source.kind", "kafka"), "monitors[0].source", "events"),
        (with_change("monitors.0.source.tabel", "t"), "monitors[0].source.tabel", "unknown key"),
        (with_change("monitors.0.thresholds", {"warning": 0.5, "critical": 0.2}), "monitors[0].thresholds", "must not exceed"),
        (with_change("monitors.0.thresholds", {"warning": 0.3}), "monitors[0].thresholds", "must not exceed"),
        (with_change("defaults.thresholds", {"warning": 0.5, "critical": 0.2}), "defaults.thresholds", "must not exceed"),
        (with_change("defaults.thresholds", {"statistic": "chi2"}), "defaults.thresholds.statistic", "kl"),
        (with_change("defaults.schedule", {"every": "5m", "cron": "* * * * *"}), "defaults.schedule", "exactly one"),
        (with_change("defaults.schedule", {}), "defaults.schedule", "exactly one"),
        (with_change("defaults.schedule", {"cron": "61 * * * *"}), "defaults.schedule.cron", "crontab"),
        (with_change("defaults.schedule", {"every": "soon"}), "defaults.schedule.every", "duration"),
        (with_change("defaults.window", {"size": "0s"}), "defaults.window.size", "greater than"),
        (with_change("defaults.reference", {"kind": "fixed", "start": "2024-02-01", "end": "2024-01-01"}),
         "defaults.reference", "before"),
        (with_change("defaults.reference", {"kind": "sliding"}), "defaults.reference", "rolling"),
        (with_change("defaults.smoothing", {"method": "pseudocount", "alpha": 0}), "defaults.smoothing.alpha", "greater than 0"),
        (with_change("defaults.smoothing", {"method": "epsilon", "epsilon": 2}), "defaults.smoothing.epsilon", "less than 1"),
        (with_change("defaults.kl_direction", "both"), "defaults.kl_direction", "reference_current"),
        (with_change("defaults.min_samples", 0), "defaults.min_samples", "greater than or equal to 1"),
        (with_change("compute.device", "gpu"), "compute.device", "pattern"),
        (with_change("compute.dtype", "float16"), "compute.dtype", "float64"),
        (with_change("compute.threads", 0), "compute.threads", "greater than or equal to 1"),
        (with_change("server.port", 70000), "server.port", "less than or equal to 65535"),
        (with_change("monitors.0.name", "bad name!"), "monitors[0].name", "pattern"),
        (with_change("monitors.0.features", []), "monitors[0]", "at least one"),
        (with_change("monitors.0.features", [{"column": "x"}, {"column": "x"}]), "monitors[0]", "listed twice in features: x"),
        (with_change("monitors.0.features.0.type", "text"), "monitors[0].features[0].type", "numeric"),
        (with_change("monitors.0.features.0.top_k", 5), "monitors[0].features[0]", "categorical columns only"),
        (with_change("monitors.0.features.0", {"column": "x", "type": "categorical", "bins": 4}),
         "monitors[0].features[0]", "numeric columns only"),
        (with_change("monitors.0.features.0", {"column": "x", "binning": "explicit"}), "monitors[0].features[0]", "needs 'edges'"),
        (with_change("monitors.0.features.0", {"column": "x", "edges": [1, 1, 2]}), "monitors[0].features[0]", "strictly increasing"),
        (with_change("monitors.0.features.0", {"column": "x", "binning": "uniform", "range": [1, 0]}),
         "monitors[0].features[0]", "low < high"),
        (with_change("monitors.0.features.0", {"column": "x", "range": [0, 1]}), "monitors[0].features[0]", "'uniform' only"),
        (with_change("monitors.0.features.0", {"column": "x", "edges": [0, 1], "bins": 5}), "monitors[0].features[0]", "make 3 bins"),
        (with_change("monitors.0.thresholds", {"per_feature": {"y": {"warning": 0.1}}}), "monitors[0]", "not in features: y"),
        (with_change("monitors.0.thresholds", {"per_feature": {"x": {"warning": 0.9}}}),
         "monitors[0].thresholds.per_feature.x", "must not exceed"),
        (with_change("monitors.0.source.where", {"v": [1, 2]}), "monitors[0].source.where.v", "equality filters only"),
        (with_change("monitors.0.source.table", ""), "monitors[0].source.table", "at least 1 character"),
    ],
)
def test_invalid_config_names_the_key_path(raw, path, words):
    problems = errors_of(raw)
    assert any(p.startswith(f"{path}:") and words in p for p in problems), problems


def test_unique_monitor_names_name_the_key_path():
    raw = copy.deepcopy(MINIMAL)
    raw["monitors"].append(copy.deepcopy(raw["monitors"][0]))
    assert "monitors[1].name: 'm' is already the name of monitors[0]" in errors_of(raw)


def test_slices_lateness_and_significance_are_inherited_and_overridable():
    raw = copy.deepcopy(MINIMAL)
    raw["defaults"] = {"lateness": "10m", "significance": 0.05, "slice": "off"}
    raw["monitors"].append({**copy.deepcopy(raw["monitors"][0]), "name": "n", "significance": None,
                            "slice": "5m", "lateness": "0s"})
    inherited, overridden = parse_config(raw, {}).resolved_monitors()
    assert (inherited.lateness, inherited.significance, inherited.slice) == (timedelta(minutes=10), 0.05, "off")
    assert (overridden.lateness, overridden.significance, overridden.slice) == (
        timedelta(0), None, timedelta(minutes=5))
    assert parse_config(MINIMAL, {}).resolved_monitors()[0].significance == 0.01


@pytest.mark.parametrize("key, value, words", [
    ("significance", 0, "greater than 0"),
    ("significance", 1.5, "less than 1"),
    ("slice", "sometimes", "duration"),
    ("lateness", "-5m", "duration"),
])
def test_bad_slice_lateness_significance(key, value, words):
    problems = errors_of(with_change(f"monitors.0.{key}", value))
    assert any(p.startswith(f"monitors[0].{key}") and words in p for p in problems), problems


def test_several_problems_reported_together():
    raw = with_change("monitors.0.features.0.bins", -1)
    raw["compute"] = {"threads": 0}
    problems = errors_of(raw)
    assert any(p.startswith("monitors[0].features[0].bins:") for p in problems)
    assert any(p.startswith("compute.threads:") for p in problems)


def test_env_interpolation():
    raw = with_change("monitors.0.source.url", "postgresql://${DB_USER}:${DB_PASSWORD}@${DB_HOST:-localhost}/x")
    config = parse_config(raw, {"DB_USER": "me", "DB_PASSWORD": "s3cret"})
    assert config.monitors[0].source.url == "postgresql://me:s3cret@localhost/x"


def test_missing_env_variable_names_key_path():
    raw = with_change("monitors.0.source.url", "${NOT_SET_ANYWHERE}")
    assert errors_of(raw) == ["monitors[0].source.url: environment variable NOT_SET_ANYWHERE is not set"]


def test_interpolated_value_is_validated_with_its_type():
    raw = with_change("server.port", "${PORT}")
    assert parse_config(raw, {"PORT": "9100"}).server.port == 9100
    assert any(p.startswith("server.port:") for p in errors_of(raw, {"PORT": "http"}))


def test_database_url_override():
    raw = with_change("database", {"url": "sqlite:///file.db"})
    config = parse_config(raw, {"DRIFTMON_DATABASE_URL": "postgresql://u:p@db/results"})
    assert config.database.url == "postgresql://u:p@db/results"


def test_database_url_override_makes_the_files_value_irrelevant():
    """The container pattern: `url: ${DB_URL}` in the file, DB_URL unset, DRIFTMON_DATABASE_URL set."""
    raw = with_change("database", {"url": "${DB_URL}"})
    config = parse_config(raw, {"DRIFTMON_DATABASE_URL": "postgresql://u:p@db/results"})
    assert config.database.url == "postgresql://u:p@db/results"
    assert any("DB_URL is not set" in p for p in errors_of(raw, {}))


def test_top_level_must_be_mapping():
    with pytest.raises(ConfigError, match="mapping"):
        parse_config(["a", "b"], {})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("monitors: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, environ={})


def test_config_path_from_environment(tmp_path):
    path = tmp_path / "other.yaml"
    path.write_text("server: {port: 9999}\n")
    assert load_config(None, environ={"DRIFTMON_CONFIG": str(path)}).server.port == 9999


def test_histograms_monitor_needs_no_feature_list():
    raw = {"monitors": [{"name": "h", "source": {"kind": "histograms", "table": "h", "timestamp_column": "b"}}]}
    (monitor,) = parse_config(raw, {}).resolved_monitors()
    assert monitor.features == []
    assert (monitor.source.feature_column, monitor.source.bin_column, monitor.source.count_column) == (
        "feature",
        "bin",
        "count",
    )


def test_feature_effective_binning():
    raw = with_change("monitors.0.features", [{"column": "a"}, {"column": "b", "edges": [0, 1, 2]},
                                              {"column": "c", "type": "categorical"}])
    a, b, c = parse_config(raw, {}).monitors[0].features
    assert (a.effective_binning, a.effective_bins) == ("quantile", 10)
    assert (b.effective_binning, b.effective_bins) == ("explicit", 4)
    assert c.effective_top_k == 20


def test_config_file_that_is_not_utf8_names_the_file_and_byte(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"database:\n  url: 'caf\xe9'\n")
    with pytest.raises(ConfigError, match=r"config.yaml is not UTF-8 text: byte 0xe9 at offset 21"):
        load_config(path, {})


def test_duplicate_keys_are_rejected_with_their_key_path(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("monitors:\n  - name: m\n    source: {kind: events, table: t, timestamp_column: ts}\n"
                    "    features: [{column: x, bins: 3, bins: 4}]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.problems == ["monitors[0].features[0].bins: duplicate key (lines 4 and 4)"]


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path):
    import time

    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(lines) + "\n")  # 9**9 = 387 M values once expanded
    began = time.perf_counter()
    with pytest.raises(ConfigError, match="alias bomb"):
        load_config(path, {})
    assert time.perf_counter() - began < 5


def test_yaml_anchors_within_bounds_still_work(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("monitors:\n  - name: a\n    source: &src {kind: events, table: t, timestamp_column: ts}\n"
                    "    features: [{column: x}]\n  - name: b\n    source: *src\n    features: [{column: y}]\n")
    assert [m.source.table for m in load_config(path, {}).monitors] == ["t", "t"]


# --- bounds: what datetime arithmetic, databases and Python can handle -------------------


@pytest.mark.parametrize("value", ["9999999w", "99999999999999w", "9" * 5000 + "s", "36526d", 1e300, 10**30,
                                   -(10**30), timedelta(days=10**6), "99999999999999999999ms"])
def test_durations_beyond_100_years_are_refused_without_overflow(value):
    """9999999w fit a timedelta and then overflowed every window's arithmetic (OverflowError, exit 1)."""
    with pytest.raises(ValueError, match=r"is too long: durations are at most 100 years \(36525d\)"):
        parse_duration(value)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), True])
def test_durations_that_are_not_numbers_are_refused(value):
    with pytest.raises(ValueError, match="expected a duration like 30s"):
        parse_duration(value)


def test_a_duration_of_100_years_is_taken():
    assert parse_duration("36525d") == parse_duration(36525 * 86400) == timedelta(days=36525)
    assert parse_duration("5217w") == timedelta(weeks=5217)


@pytest.mark.parametrize(
    ("raw", "path", "words"),
    [
        (with_change("monitors.0.window", {"size": "9999999w"}), "monitors[0].window.size", "at most 100 years"),
        (with_change("defaults.schedule", {"every": "99999999999999w"}), "defaults.schedule.every", "at most 100 years"),
        (with_change("monitors.0.reference", {"kind": "fixed", "start": "0001-01-01", "end": "2024-01-01"}),
         "monitors[0].reference.start", "from 1900-01-01 to before 2200-01-01"),
        (with_change("monitors.0.source.timeout", "25d"), "monitors[0].source.timeout", "at most 24d"),
        (with_change("monitors.0.source.where", {"v": 2**63}), "monitors[0].source.where.v", "64 bits"),
        (with_change("monitors.0.source.where", {"v": float("nan")}), "monitors[0].source.where.v", "finite"),
        (with_change("monitors.0.features.0", {"column": "x", "binning": "uniform", "range": [0, float("inf")]}),
         "monitors[0].features[0]", "finite"),
        (with_change("monitors.0.min_samples", 10**30), "monitors[0].min_samples", "less than or equal to"),
        (with_change("compute.device", "cuda:128"), "compute.device", "from 0 to 127"),
        (with_change("compute.device", "cuda:99999999999999999999"), "compute.device", "from 0 to 127"),
        (with_change("database.url", "alice:pw@db/x"), "database.url", "no scheme"),
        (with_change("database.url", "hive://h/default"), "database.url", "keeps its results in SQLite or PostgreSQL"),
        (with_change("monitors.0.source.url", "alice:pw@db/x"), "monitors[0].source.url", "no scheme"),
    ],
)
def test_settings_out_of_bounds_name_the_key_path(raw, path, words):
    problems = [p for p in errors_of(raw) if p.startswith(f"{path}:")]
    assert any(words in p for p in problems), errors_of(raw)
    assert "pw" not in " ".join(problems)


def test_an_empty_source_url_means_the_results_database():
    """``url: ${SOURCE_DATABASE_URL:-}`` (the shipped config) with the variable unset."""
    config = parse_config(with_change("monitors.0.source.url", ""), {})
    assert config.source_url(config.monitors[0].source) == config.database.url


@pytest.mark.parametrize(("schedule", "catch_up", "refused"), [
    ({"every": "5200w"}, 10, False), ({"every": "5200w"}, 11, True),
    ({"cron": "*/5 * * * *"}, 10_000, False), ({"cron": "0 0 31 * *"}, 5_000, False),
    ({"cron": "0 0 1 1 *"}, 997, False), ({"cron": "0 0 1 1 *"}, 1_000, True),
    ({"cron": "0 0 29 2 *"}, 124, False), ({"cron": "0 0 29 2 *"}, 126, True),
])
def test_catch_up_reaches_back_at_most_1000_years(schedule, catch_up, refused):
    """every: 100y with catch_up 10000 passed check-config, then serve overflowed (retries.horizon)."""
    raw = with_change("monitors.0.schedule", schedule)
    raw["monitors"][0]["catch_up"] = catch_up
    problems = [p for p in (errors_of(raw) if refused else []) if p.startswith("monitors[0].catch_up:")]
    if refused:
        assert problems and "must be at most 1000 years" in problems[0], errors_of(raw)
    else:
        parse_config(raw, {})


@pytest.mark.parametrize(("cron", "span"), [
    ("*/7 * * * *", timedelta(days=3)), ("0 9-17 * * 1-5", timedelta(days=30)), ("0 0 31 * *", timedelta(days=800)),
    ("0 0 1,15 * fri", timedelta(days=400)), ("0 0 1 1,7 *", timedelta(days=3000)),
    ("0 0 29 2 *", timedelta(days=366 * 12)), ("@monthly", timedelta(days=800)),
])
def test_the_longest_interval_bounds_every_gap_between_ticks(cron, span):
    from driftmon.config import Schedule, longest_interval
    from driftmon.windows import ticks

    schedule = Schedule(cron=cron)
    start = datetime(2095, 1, 1, tzinfo=UTC)  # 2100 is no leap year: February 29th's longest gap
    times = list(ticks(schedule, start, start + span))
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) <= longest_interval(schedule)


def test_yaml_nested_too_deep_is_refused_before_the_composer_recurses(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("monitors: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"line 1: lists and mappings nested more than 32 deep"):
        load_config(path, {})


def test_yaml_nested_too_deep_by_aliases_is_refused(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("".join(f"x{i}: &x{i} [{f'*x{i - 1}' if i else ''}]\n" for i in range(40)))
    with pytest.raises(ConfigError, match="nested more than 32 deep once its aliases are expanded"):
        load_config(path, {})


def test_an_integer_of_thousands_of_digits_names_its_key(tmp_path):
    """PyYAML's int() raised ValueError (Python's 4,300-digit limit) from inside the loader."""
    path = tmp_path / "config.yaml"
    path.write_text("compute:\n  threads: " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.problems == ["compute.threads: a number of 5000 digits (line 2); no setting takes one of "
                                   "more than 100"]
