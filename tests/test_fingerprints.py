"""Every setting is either fingerprinted or declared harmless: forgetting one must fail here.

A stored profile, slice or result is reused only while its fingerprint matches
(driftmon/fingerprints.py). The fingerprints dump the config models whole, less
a named list; these tests enumerate the models' fields, so a new setting that
nobody classified fails the build instead of silently reusing stale numbers.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from driftmon import fingerprints
from driftmon.config import (
    EpsilonSmoothing,
    EventsSource,
    Feature,
    FixedReference,
    HistogramsSource,
    MonitorSettings,
    Multivariate,
    Schedule,
    Segments,
    Thresholds,
    VolumeCheck,
    Window,
)
from driftmon.config_file import parse_config

URL = "postgresql+psycopg://alice:secret@db.internal:5432/prod"

# Fingerprinted settings, each with another value that must change the fingerprint.
SOURCE_CHANGES = {
    "kind": None,  # the kind changes the model itself: checked by the two models differing
    "url": "postgresql+psycopg://alice:secret@db.internal:5432/staging",
    "table": "other_log",
    "schema_": "archive",
    "timestamp_column": "created_at",
    "where": {"model_version": "v4"},
    "timestamp_unit": "ms",
    "feature_column": "name",
    "bin_column": "bucket",
    "count_column": "n",
    "role_column": "role",
}
FEATURE_CHANGES = {
    "column": "other",
    "type": "categorical",
    "role": "prediction",
    "bins": 7,
    "binning": "uniform",
    "range": (0.0, 2.0),
    "edges": [1.0, 2.0],
    "top_k": 3,
}
MONITOR_CHANGES = {
    "source": EventsSource(kind="events", table="other_log", timestamp_column="ts"),
    "features": [Feature(column="amount", bins=7)],
    "window": Window(size=timedelta(hours=2)),
    "reference": FixedReference(kind="fixed", start=datetime(2024, 1, 1, tzinfo=UTC),
                                end=datetime(2024, 2, 1, tzinfo=UTC)),
    "smoothing": EpsilonSmoothing(method="epsilon", epsilon=1e-3),
    "kl_direction": "current_reference",
    "thresholds": Thresholds(warning=0.2, critical=0.5),
    "per_feature": {"amount": Thresholds(warning=0.3, critical=0.6)},
    "min_samples": 500,
    "significance": 0.05,
    "segments": Segments(by=["country"]),
}
SEGMENTS_CHANGES = {"by": ["app"], "max": 7}


def _events(**changes) -> EventsSource:
    settings = {"kind": "events", "table": "inference_log", "timestamp_column": "ts",
                "where": {"model_version": "v3"}, **changes}
    return EventsSource.model_validate(settings)


def _histograms(**changes) -> HistogramsSource:
    return HistogramsSource.model_validate({"kind": "histograms", "table": "hist", "timestamp_column": "ts",
                                            **changes})


def _monitor() -> MonitorSettings:
    config = parse_config({"monitors": [{"name": "fraud", "features": [{"column": "amount", "bins": 10}],
                                          "source": {"kind": "events", "table": "inference_log",
                                                     "timestamp_column": "ts"}}]}, {})
    return config.resolved_monitors()[0]


def _classified(changes: dict, harmless: dict) -> set[str]:
    assert not set(changes) & set(harmless), "a setting is both fingerprinted and harmless"
    return set(changes) | set(harmless)


@pytest.mark.parametrize("model", [EventsSource, HistogramsSource])
def test_every_source_setting_is_fingerprinted_or_declared_harmless(model):
    unclassified = set(model.model_fields) - _classified(SOURCE_CHANGES, fingerprints.SOURCE_HARMLESS)
    assert not unclassified, (f"{model.__name__} has settings that are neither fingerprinted nor in "
                              f"fingerprints.SOURCE_HARMLESS: {sorted(unclassified)}")


def test_every_feature_setting_is_fingerprinted_or_declared_harmless():
    unclassified = set(Feature.model_fields) - _classified(FEATURE_CHANGES, fingerprints.FEATURE_HARMLESS)
    assert not unclassified, f"Feature settings neither fingerprinted nor harmless: {sorted(unclassified)}"


def test_every_monitor_setting_is_fingerprinted_or_declared_harmless():
    unclassified = set(MonitorSettings.model_fields) - _classified(MONITOR_CHANGES, fingerprints.MONITOR_HARMLESS)
    assert not unclassified, f"monitor settings neither fingerprinted nor harmless: {sorted(unclassified)}"


def test_every_segments_setting_is_fingerprinted_or_declared_harmless():
    unclassified = set(Segments.model_fields) - _classified(SEGMENTS_CHANGES, fingerprints.SEGMENTS_HARMLESS)
    assert not unclassified, f"segments settings neither fingerprinted nor harmless: {sorted(unclassified)}"


@pytest.mark.parametrize("name", sorted(SEGMENTS_CHANGES))
def test_changing_a_segments_setting_changes_the_column_and_results_fingerprints(name):
    base = Segments(by=["country"], max=20)
    changed = base.model_copy(update={name: SEGMENTS_CHANGES[name]})
    source, feature = fingerprints.source_fingerprint(_events(), URL), Feature(column="amount")
    assert fingerprints.column_fingerprint(source, feature, base) != fingerprints.column_fingerprint(
        source, feature, changed)
    monitor = _monitor()
    assert fingerprints.results_fingerprint(monitor.model_copy(update={"segments": base}), URL) != \
        fingerprints.results_fingerprint(monitor.model_copy(update={"segments": changed}), URL)


def test_harmless_segments_settings_and_no_segments_keep_the_fingerprints():
    source, feature = fingerprints.source_fingerprint(_events(), URL), Feature(column="amount")
    base = Segments(by=["country"])
    assert fingerprints.column_fingerprint(source, feature, base) == fingerprints.column_fingerprint(
        source, feature, base.model_copy(update={"top_k": 9}))
    # An unsegmented monitor keeps the fingerprints it had before segments existed.
    assert fingerprints.column_fingerprint(source, feature, None) == fingerprints.fingerprint(
        {"source": source, "feature": feature.model_dump(mode="json")})


@pytest.mark.parametrize("name", sorted(set(SOURCE_CHANGES) - {"kind", "url"}))
def test_changing_a_fingerprinted_source_setting_changes_the_fingerprint(name):
    build = _histograms if name in HistogramsSource.model_fields and name not in EventsSource.model_fields \
        else _events
    before = fingerprints.source_fingerprint(build(), URL)
    after = fingerprints.source_fingerprint(build(**{_alias(name): SOURCE_CHANGES[name]}), URL)
    assert before != after


def test_the_source_kind_and_database_are_fingerprinted():
    assert fingerprints.source_fingerprint(_events(), URL) != fingerprints.source_fingerprint(
        _histograms(table="inference_log", where={"model_version": "v3"}), URL)
    assert fingerprints.source_fingerprint(_events(), URL) != fingerprints.source_fingerprint(
        _events(), SOURCE_CHANGES["url"])


@pytest.mark.parametrize("name", sorted(fingerprints.SOURCE_HARMLESS))
def test_harmless_source_settings_keep_the_fingerprint(name):
    assert fingerprints.source_fingerprint(_events(), URL) == fingerprints.source_fingerprint(
        _events(**{name: "30s"}), URL)


@pytest.mark.parametrize("name", sorted(FEATURE_CHANGES))
def test_changing_a_feature_setting_changes_the_column_fingerprint(name):
    base = {"column": "amount", "type": "numeric", "bins": 5, "binning": "quantile"}
    changed = {**base, name: FEATURE_CHANGES[name]}
    if name in ("range", "edges"):  # each needs its binning
        changed["binning"] = "uniform" if name == "range" else "explicit"
        changed.pop("bins") if name == "edges" else None
    if name == "top_k" or changed.get("type") == "categorical":
        changed = {"column": "amount", "type": "categorical", "top_k": FEATURE_CHANGES["top_k"]}
        base = {"column": "amount", "type": "categorical", "top_k": 4} if name == "top_k" else base
    source = fingerprints.source_fingerprint(_events(), URL)
    assert fingerprints.column_fingerprint(source, Feature(**base)) != fingerprints.column_fingerprint(
        source, Feature(**changed))


@pytest.mark.parametrize("name", sorted(MONITOR_CHANGES))
def test_changing_a_monitor_setting_that_shapes_numbers_changes_the_results_fingerprint(name):
    monitor = _monitor()
    changed = monitor.model_copy(update={name: MONITOR_CHANGES[name]})
    assert fingerprints.results_fingerprint(monitor, URL) != fingerprints.results_fingerprint(changed, URL)


@pytest.mark.parametrize("name", sorted(fingerprints.MONITOR_HARMLESS))
def test_harmless_monitor_settings_keep_the_results_fingerprint(name):
    monitor = _monitor()
    other = {"name": "renamed", "schedule": Schedule(every=timedelta(minutes=1)), "catch_up": 7,
             "slice": "off", "lateness": timedelta(hours=3), "volume": VolumeCheck(warning=0.5, critical=0.9),
             "multivariate": Multivariate()}
    changed = monitor.model_copy(update={name: other[name]})
    assert fingerprints.results_fingerprint(monitor, URL) == fingerprints.results_fingerprint(changed, URL)


def test_the_password_never_enters_a_fingerprint_and_cannot_change_it():
    rotated = "postgresql+psycopg2://alice:rotated@db.internal:5432/prod?sslmode=require&password=x"
    identity = fingerprints.url_identity(rotated)
    assert "rotated" not in repr(identity) and "password" not in identity["query"]
    assert identity == fingerprints.url_identity("postgresql://alice:secret@db.internal:5432/prod?sslmode=require")
    assert fingerprints.url_identity(URL) != fingerprints.url_identity(URL.replace("db.internal", "db.other"))


def test_a_relative_sqlite_path_is_the_file_sqlite_opens(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert fingerprints.url_identity("sqlite:///data.db")["database"] == os.path.join(str(tmp_path), "data.db")
    assert fingerprints.url_identity("sqlite:///data.db") == fingerprints.url_identity(
        f"sqlite:///{tmp_path / 'data.db'}")


def _alias(name: str) -> str:
    return "schema" if name == "schema_" else name
