"""`driftmon explain`: per-bin terms of stored windows, read from the results database only."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner
from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from scipy.special import rel_entr

from driftmon.cli import main
from driftmon.config import MonitorSettings
from driftmon.config_file import parse_config
from driftmon.errors import ConfigError
from driftmon.inspect.explain import NO_BINS, as_dict, as_json, as_table, explain_window, load_explanation, only_columns
from driftmon.stats.divergence import divergences
from driftmon.store.repository import Repository
from driftmon.textsafe import is_visible, visible
from driftmon.window_results import classify

WINDOW_END = datetime(2024, 3, 8, 12, tzinfo=UTC)
# Every kind of bin: numeric edges (both open ends), categories, other and missing.
AMOUNT = (["(-inf, 1.5)", "[1.5, 3.0)", "[3.0, +inf)", "__missing__"], [300, 500, 200, 10], [100, 300, 500, 90])
COUNTRY = (["DE", "FR", "US", "__other__", "__missing__"], [400, 300, 300, 0, 0], [250, 200, 190, 350, 10])
AGE = (["(-inf, 30.0)", "[30.0, 50.0)", "[50.0, +inf)"], [250, 500, 250], [240, 520, 240])


def monitor_config(**defaults) -> dict:
    return {
        "database": {"url": "sqlite:///unused.db"},
        "defaults": {"thresholds": {"warning": 0.1, "critical": 0.25}, **defaults},
        "monitors": [{
            "name": "shop",
            "source": {"kind": "events", "table": "orders", "timestamp_column": "ts"},
            "features": [{"column": "amount", "type": "numeric"}, {"column": "country", "type": "categorical"},
                         {"column": "age", "type": "numeric"}],
        }],
    }


def settings(**defaults) -> MonitorSettings:
    return parse_config(monitor_config(**defaults)).resolved_monitors()[0]


def stored_rows(monitor: MonitorSettings, window_end: datetime, columns: dict[str, tuple],
                statistic: str = "kl") -> list[dict]:
    """Result rows as the pipeline stores them: statistics from the engine on the same counts."""
    width = max(len(labels) for labels, _, _ in columns.values())
    reference, current = np.zeros((len(columns), width)), np.zeros((len(columns), width))
    mask = np.zeros((len(columns), width), dtype=bool)
    for f, (labels, ref, cur) in enumerate(columns.values()):
        reference[f, :len(labels)], current[f, :len(labels)], mask[f, :len(labels)] = ref, cur, True
    smoothing = monitor.smoothing
    stats = divergences(reference, current, mask, smoothing=smoothing.method,
                        alpha=getattr(smoothing, "alpha", 0.5), epsilon=getattr(smoothing, "epsilon", 1e-4),
                        kl_direction=monitor.kl_direction, device="cpu")
    rows = []
    for f, (name, (labels, ref, cur)) in enumerate(columns.items()):
        values = {s: float(getattr(stats, s)[f]) for s in ("kl", "psi", "js")}
        rows.append({
            "run_id": None, "monitor": monitor.name, "column": name, "role": "feature",
            "window_start": window_end - timedelta(hours=1), "window_end": window_end,
            "reference_start": datetime(2024, 3, 1, tzinfo=UTC), "reference_end": datetime(2024, 3, 8, tzinfo=UTC),
            "samples_current": float(sum(cur)), "samples_reference": float(sum(ref)),
            "missing_current": float(cur[-1]) if labels[-1] == "__missing__" else 0.0,
            "missing_ratio": (cur[-1] if labels[-1] == "__missing__" else 0.0) / sum(cur),
            **values, "statistic": statistic, "threshold_warning": 0.1, "threshold_critical": 0.25,
            "status": classify(values[statistic], 0.1, 0.25), "computed_at": window_end,
            "p_value": 1e-6 * (f + 1), "q_value": 2e-6 * (f + 1),
            "labels": list(labels), "reference_counts": [float(c) for c in ref],
            "current_counts": [float(c) for c in cur],
        })
    return rows


def store(engine: sa.Engine, rows: list[dict]) -> None:
    with engine.begin() as connection:
        Repository().upsert_results(connection, rows)


def independent_terms(ref, cur, alpha: float = 0.5, kl_direction: str = "reference_current") -> dict[str, np.ndarray]:
    """Pseudo-count shares and each statistic's terms, written out from the README's "What driftmon measures"
    (KL's with scipy's ``rel_entr``, x ln(x / y))."""
    ref, cur = np.asarray(ref, float), np.asarray(cur, float)
    p = (ref + alpha) / (ref.sum() + alpha * len(ref))
    q = (cur + alpha) / (cur.sum() + alpha * len(cur))
    m = (p + q) / 2
    kl = rel_entr(p, q) if kl_direction == "reference_current" else rel_entr(q, p)
    return {"p": p, "q": q, "kl": kl, "psi": (q - p) * np.log(q / p),
            "js": 0.5 * (p * np.log(p / m) + q * np.log(q / m))}


def by_movement(labels, ref, cur) -> list[str]:
    """The labels, the bin whose PSI term is largest first (ties in the bins' order)."""
    psi = independent_terms(ref, cur)["psi"]
    return [labels[i] for i in np.argsort(-psi, kind="stable")]


# --- the explanation ------------------------------------------------------------------------


@pytest.mark.parametrize("defaults", [
    {},
    {"kl_direction": "current_reference"},
    {"smoothing": {"method": "epsilon", "epsilon": 1e-4}},
])
@pytest.mark.parametrize("statistic", ["kl", "psi", "js"])
def test_terms_sum_to_the_stored_statistic(defaults, statistic):
    monitor = settings(**defaults)
    rows = stored_rows(monitor, WINDOW_END, {"amount": AMOUNT, "country": COUNTRY, "age": AGE}, statistic)
    explanation = explain_window(monitor, rows)
    for row, column in zip(rows, explanation.columns, strict=True):
        assert column.contributions_of == statistic and column.note is None
        assert math.fsum(b.contribution for b in column.bins) == pytest.approx(row[statistic], abs=1e-12)
        assert math.fsum(b.share_of_statistic for b in column.bins) == pytest.approx(1.0, abs=1e-12)
        assert math.fsum(b.reference_share for b in column.bins) == pytest.approx(1.0, abs=1e-12)
        assert math.fsum(b.current_share for b in column.bins) == pytest.approx(1.0, abs=1e-12)
        assert math.fsum(b.psi_term for b in column.bins) == pytest.approx(row["psi"], abs=1e-12)
        assert math.fsum(b.share_of_movement for b in column.bins) == pytest.approx(1.0, abs=1e-12)


def test_bins_match_an_independent_computation():
    monitor = settings()
    explanation = explain_window(monitor, stored_rows(monitor, WINDOW_END, {"country": COUNTRY}, "psi"))
    expected = independent_terms(COUNTRY[1], COUNTRY[2])
    column = explanation.column("country")
    assert [b.label for b in column.bins] == COUNTRY[0]  # the bins' own order
    np.testing.assert_allclose([b.reference_share for b in column.bins], expected["p"], rtol=1e-12)
    np.testing.assert_allclose([b.current_share for b in column.bins], expected["q"], rtol=1e-12)
    np.testing.assert_allclose([b.contribution for b in column.bins], expected["psi"], rtol=1e-12)
    assert [b.reference_count for b in column.bins] == COUNTRY[1]
    assert [b.current_count for b in column.bins] == COUNTRY[2]


def test_top_bins_are_ordered_by_psi_term():
    monitor = settings()
    explanation = explain_window(monitor, stored_rows(monitor, WINDOW_END, {"country": COUNTRY}, "psi"))
    column = explanation.column("country")
    expected = independent_terms(COUNTRY[1], COUNTRY[2])["psi"]
    order = [COUNTRY[0][i] for i in np.argsort(-expected, kind="stable")]
    assert [b.label for b in column.ranked] == order
    assert order[0] == "__other__"  # the new category is what moved PSI most
    assert [b.label for b in column.top(2)] == order[:2]
    assert [b["label"] for b in as_dict(explanation, top=2)["columns"][0]["top_bins"]] == order[:2]


@pytest.mark.parametrize("direction", ["reference_current", "current_reference"])
@pytest.mark.parametrize("statistic", [None, "kl", "psi", "js"])
def test_bins_are_ranked_by_how_much_they_moved_whatever_the_statistic(direction, statistic):
    # KL(reference || current), the default, gives a category that appears only in the current
    # window a negative term: ranked by it, the cause of the drift came last. The PSI term
    # (q - p) ln(q / p) is >= 0 and symmetric, so it ranks the bins by how much they moved.
    monitor = settings(kl_direction=direction)
    rows = stored_rows(monitor, WINDOW_END, {"country": COUNTRY, "amount": AMOUNT})
    explanation = explain_window(monitor, rows, statistic)
    for labels, ref, cur in (COUNTRY, AMOUNT):
        column = explanation.column("country" if labels is COUNTRY[0] else "amount")
        expected = independent_terms(ref, cur, kl_direction=direction)
        assert [b.label for b in column.ranked] == by_movement(labels, ref, cur)
        np.testing.assert_allclose([b.psi_term for b in column.bins], expected["psi"], rtol=1e-12)
        np.testing.assert_allclose([b.share_of_movement for b in column.bins],
                                   expected["psi"] / expected["psi"].sum(), rtol=1e-12)
        assert all(0 <= b.share_of_movement <= 1 for b in column.bins)
        # Beside the ranking: the signed terms of the chosen statistic, still summing to it.
        shown = statistic or "kl"
        assert column.contributions_of == shown
        np.testing.assert_allclose([b.contribution for b in column.bins], expected[shown], rtol=1e-12)
    assert explanation.column("country").ranked[0].label == "__other__"


def test_the_new_category_tops_the_default_kl_although_its_kl_term_is_negative():
    monitor = settings()
    explanation = explain_window(monitor, stored_rows(monitor, WINDOW_END, {"country": COUNTRY}))
    top = explanation.column("country").ranked[0]
    assert top.label == "__other__" and top.contribution < 0 < top.psi_term
    assert top.share_of_movement > 0.5
    table = as_table(explanation, top=5)
    header, first = table.splitlines()[3:5]
    assert header.split() == ["bin", "ref", "count", "ref", "share", "cur", "count", "cur", "share",
                              "psi", "term", "of", "psi", "kl", "term"]
    assert first.split()[0] == "__other__" and first.split()[-1] == f"{top.contribution:+.4f}"
    shares = [float(line.split()[-2].rstrip("%")) for line in table.splitlines()[4:9]]
    assert all(0 <= share <= 100 for share in shares)  # no "136.8 %" or "-3.1 %" of a statistic
    assert shares == sorted(shares, reverse=True)


def test_labels_of_every_bin_kind_are_shown_as_stored():
    monitor = settings()
    explanation = explain_window(monitor, stored_rows(monitor, WINDOW_END, {"amount": AMOUNT, "country": COUNTRY}))
    document = as_dict(explanation)
    labels = {b["label"] for c in document["columns"] for b in c["top_bins"]}
    assert labels == {*AMOUNT[0], *COUNTRY[0]}
    table = as_table(explanation, top=10)
    # The table rounds edges to 4 significant digits (the JSON above keeps them exact): 3.0 reads 3.
    for label in ("(-inf, 1.5)", "[1.5, 3)", "[3, +inf)", "DE", "__other__", "__missing__"):
        assert f"\n  {label} " in table


def test_results_stored_without_bins_are_explained_as_far_as_they_go():
    monitor = settings()
    rows = stored_rows(monitor, WINDOW_END, {"amount": AMOUNT, "age": AGE})
    rows[0].update(labels=None, reference_counts=None, current_counts=None)
    explanation = explain_window(monitor, rows)
    old, new = explanation.columns
    assert (old.note, old.bins, old.bins_stored) == (NO_BINS, (), False)
    assert old.value == rows[0]["kl"] and old.status == rows[0]["status"]
    assert new.bins_stored and len(new.bins) == 3
    document = as_dict(explanation)["columns"][0]
    assert (document["bins_stored"], document["top_bins"], document["note"]) == (False, [], NO_BINS)
    assert NO_BINS in as_table(explanation)


def test_an_insufficient_window_shows_counts_without_a_statistic():
    monitor = settings()
    rows = stored_rows(monitor, WINDOW_END, {"age": AGE, "amount": AMOUNT})
    rows[0].update(kl=None, psi=None, js=None, status="insufficient_data")
    rows[1].update(current_counts=[0.0] * 4, kl=None, psi=None, js=None, status="insufficient_data")
    sparse, empty = explain_window(monitor, rows).columns
    assert sparse.value is None and len(sparse.bins) == 3 and sparse.note is None
    assert all(b.share_of_statistic is not None for b in sparse.bins)
    assert empty.note and all(b.contribution is None for b in empty.bins)
    assert [b.reference_count for b in empty.bins] == AMOUNT[1]


def test_a_changed_smoothing_is_pointed_out():
    rows = stored_rows(settings(), WINDOW_END, {"amount": AMOUNT})
    column = explain_window(settings(smoothing={"method": "pseudocount", "alpha": 5.0}), rows).column("amount")
    assert column.note and "smoothing" in column.note
    assert math.fsum(b.share_of_statistic for b in column.bins) == pytest.approx(1.0, abs=1e-12)


def test_the_window_at_or_before_a_time_is_chosen(engine):
    monitor = settings()
    store(engine, stored_rows(monitor, WINDOW_END - timedelta(hours=1), {"amount": AGE}))
    store(engine, stored_rows(monitor, WINDOW_END, {"amount": AMOUNT}))
    with engine.connect() as connection:
        assert load_explanation(connection, monitor).window.end == WINDOW_END
        assert load_explanation(connection, monitor, WINDOW_END).window.end == WINDOW_END
        earlier = load_explanation(connection, monitor, WINDOW_END - timedelta(minutes=1))
        assert earlier.window.end == WINDOW_END - timedelta(hours=1)
        assert [b.label for b in earlier.column("amount").bins] == AGE[0]
        assert load_explanation(connection, monitor, WINDOW_END - timedelta(hours=3)) is None


# --- the command --------------------------------------------------------------------------

COLUMN_KEYS = ["column", "role", "status", "statistic", "value", "kl", "psi", "js", "threshold_warning",
               "threshold_critical", "p_value", "q_value", "samples_reference", "samples_current",
               "contributions_of", "ranked_by", "bins", "bins_stored", "note", "top_bins"]
BIN_KEYS = ["label", "reference_count", "reference_share", "current_count", "current_share", "contribution",
            "share_of_statistic", "psi_term", "share_of_movement"]


@pytest.fixture
def config_file(tmp_path, db_url):
    raw = monitor_config()
    raw["database"]["url"] = db_url
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def explain(config_file, *args: str):
    return CliRunner().invoke(main, ["explain", "--config", str(config_file), "--monitor", "shop", *args])


def test_json_output_is_the_documented_contract(config_file, engine):
    store(engine, stored_rows(settings(), WINDOW_END, {"amount": AMOUNT, "country": COUNTRY, "age": AGE}))
    result = explain(config_file, "--output", "json", "--top", "2", "--column", "country", "--column", "amount")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert list(document) == ["monitor", "window_start", "window_end", "reference_start", "reference_end",
                              "columns"]
    assert document["window_end"] == "2024-03-08T12:00:00+00:00"
    assert [c["column"] for c in document["columns"]] == ["country", "amount"]
    for column in document["columns"]:
        assert list(column) == COLUMN_KEYS
        assert len(column["top_bins"]) == 2 and all(list(b) == BIN_KEYS for b in column["top_bins"])
    country = document["columns"][0]
    assert (country["statistic"], country["status"], country["bins"], country["q_value"]) == \
        ("kl", "critical", 5, 4e-6)
    assert country["ranked_by"] == "psi" and country["contributions_of"] == "kl"
    first = country["top_bins"][0]
    assert first["label"] == "__other__" and first["reference_count"] == 0  # the new category moved most
    expected = independent_terms(COUNTRY[1], COUNTRY[2])
    other = COUNTRY[0].index("__other__")
    assert first["psi_term"] == pytest.approx(expected["psi"][other], rel=1e-12)
    assert first["share_of_movement"] == pytest.approx(expected["psi"][other] / expected["psi"].sum(), rel=1e-12)
    assert first["contribution"] == pytest.approx(expected["kl"][other], rel=1e-12) and first["contribution"] < 0


def test_table_output_and_ranking_statistic(config_file, engine):
    store(engine, stored_rows(settings(), WINDOW_END, {"amount": AMOUNT, "country": COUNTRY, "age": AGE}))
    result = explain(config_file, "--column", "country", "--statistic", "psi", "--top", "1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("monitor shop: window [2024-03-08T11:00:00+00:00, 2024-03-08T12:00:00+00:00)")
    assert lines[2].startswith("country (feature): critical  kl ")
    assert lines[4].split()[0] == "__other__" and "psi term" in lines[3]
    assert lines[3].count("term") == 1  # the PSI's terms are not shown twice
    assert lines[5] == "  (4 more bin(s); --top shows more)"


def test_a_past_window_is_explained_after_its_source_is_dropped(config_file, engine):
    # Stored results carry their counts: dropping the source table loses nothing.
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE orders (ts TIMESTAMP, amount FLOAT)"))
    store(engine, stored_rows(settings(), WINDOW_END - timedelta(days=2), {"amount": AMOUNT}))
    store(engine, stored_rows(settings(), WINDOW_END, {"amount": AGE}))
    with engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE orders"))
    result = explain(config_file, "--at", "2024-03-06T12:30:00", "--output", "json", "--top", "10")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["window_end"] == "2024-03-06T12:00:00+00:00"
    expected = independent_terms(AMOUNT[1], AMOUNT[2])
    order = np.argsort(-expected["psi"], kind="stable")
    top_bins = document["columns"][0]["top_bins"]
    assert [b["label"] for b in top_bins] == [AMOUNT[0][i] for i in order]
    np.testing.assert_allclose([b["psi_term"] for b in top_bins], expected["psi"][order], rtol=1e-12)
    np.testing.assert_allclose([b["contribution"] for b in top_bins], expected["kl"][order], rtol=1e-12)


def test_usage_errors(config_file, engine):
    store(engine, stored_rows(settings(), WINDOW_END, {"amount": AMOUNT}))
    unknown_column = explain(config_file, "--column", "nope")
    assert unknown_column.exit_code == 2 and "no column named nope" in unknown_column.output
    assert "(stored: amount)" in unknown_column.output
    unknown_monitor = CliRunner().invoke(main, ["explain", "--config", str(config_file), "--monitor", "x"])
    assert unknown_monitor.exit_code == 2 and "configured: shop" in unknown_monitor.output
    too_early = explain(config_file, "--at", "2020-01-01")
    assert too_early.exit_code == 3 and "no stored results at or before 2020-01-01" in too_early.output


def test_a_missing_results_database_is_not_created(tmp_path):
    raw = monitor_config()
    raw["database"]["url"] = f"sqlite:///{tmp_path / 'absent.db'}"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    result = explain(tmp_path / "config.yaml")
    assert result.exit_code == 3 and "no results database at" in result.output
    assert not (tmp_path / "absent.db").exists()


def test_an_unmigrated_results_database_asks_for_an_upgrade(tmp_path):
    raw = monitor_config()
    raw["database"]["url"] = f"sqlite:///{tmp_path / 'bare.db'}"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "bare.db").touch()  # an empty file is an empty SQLite database
    result = explain(tmp_path / "config.yaml")
    assert result.exit_code == 3 and "driftmon db upgrade" in result.output


def test_a_window_computed_by_a_run_is_explained_after_its_source_is_dropped(tmp_path, db_url, engine):
    from tests.sourcedata import create_and_fill, events_table

    rng = np.random.default_rng(7)
    start, drift_at = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 7, 12, tzinfo=UTC)
    rows = []
    for minute in range(0, int((WINDOW_END - start) / timedelta(minutes=1)), 2):
        ts = start + timedelta(minutes=minute)
        drifted = ts >= drift_at
        rows.append({"ts": ts, "model_version": "v3",
                     "amount": None if drifted and minute % 6 == 0 else float(rng.lognormal(3, 0.4)),
                     "country": "BR" if drifted and minute % 4 == 0 else ["DE", "FR", "US"][minute // 2 % 3],
                     "score": 0.5})
    create_and_fill(engine, events_table("orders"), rows)
    raw = monitor_config(reference={"kind": "fixed", "start": "2024-03-01T00:00:00Z", "end": "2024-03-06T00:00:00Z"},
                         schedule={"every": "1h"}, min_samples=10)
    raw["database"]["url"] = db_url
    raw["monitors"][0]["features"] = [{"column": "amount", "type": "numeric", "bins": 4},
                                      {"column": "country", "type": "categorical", "top_k": 5}]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    for at in ("2024-03-07T18:00:00Z", "2024-03-08T06:00:00Z"):
        run = CliRunner().invoke(main, ["run-once", "--config", str(config), "--at", at])
        assert run.exit_code == 1, run.output  # critical drift
    with engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE orders"))
    result = explain(config, "--at", "2024-03-07T18:00:00Z", "--output", "json", "--top", "20")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["window_end"] == "2024-03-07T18:00:00+00:00"
    amount, country = document["columns"]
    assert {b["label"] for b in country["top_bins"]} == {"DE", "FR", "US", "__other__"}
    assert len(amount["top_bins"]) == 5 and "__missing__" in {b["label"] for b in amount["top_bins"]}
    assert {b["label"][0] for b in amount["top_bins"]} == {"(", "[", "_"}
    for column in (amount, country):
        assert column["bins_stored"] and column["note"] is None
        assert math.fsum(b["contribution"] for b in column["top_bins"]) == pytest.approx(column["kl"], abs=1e-12)
        assert math.fsum(b["current_count"] for b in column["top_bins"]) == column["samples_current"]
    assert [c["top_bins"][0]["label"] for c in document["columns"]] == ["__missing__", "__other__"]
    with_psi = json.loads(explain(config, "--at", "2024-03-07T18:00:00Z", "--output", "json",
                                  "--statistic", "psi").output)
    assert [c["top_bins"][0]["label"] for c in with_psi["columns"]] == ["__missing__", "__other__"]


# --- labels from the data -------------------------------------------------------------------

# Any text a category can hold: format and math syntax, escapes, bidi controls, very long ones.
LABELS = st.one_of(st.text(), st.text(min_size=200, max_size=1000),
                   st.sampled_from(["$x^$", "\\", "{}", "%s", "\x1b[31mred\x1b[0m", "a\r\nforged line",
                                    "\u202egnp.exe", "\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"]))


def label_rows(column: str, labels: list[str]) -> list[dict]:
    """One stored window of one column whose bins are ``labels``, every count non-zero."""
    counts = [float(k + 1) for k in range(len(labels))]
    return stored_rows(settings(), WINDOW_END, {column: (labels, counts, counts[::-1])})


def assert_one_visible_line_each(text: str) -> list[str]:
    """The text's lines: no control or bidi character left raw, so no line a terminal would split or reorder."""
    lines = text.split("\n")
    assert text.splitlines() == lines or text.splitlines() == lines[:-1]  # no CR, VT, FF, NEL, U+2028 ...
    assert all(is_visible(line) for line in lines), [line for line in lines if not is_visible(line)]
    return lines


@hypothesis_settings(max_examples=150, deadline=None)
@given(labels=st.lists(LABELS, min_size=1, max_size=4, unique=True), column=LABELS)
@example(labels=["$x^$", "\u202egnp.exe"], column="\x1b]0;pwned\x07")
def test_any_label_is_shown_as_data_in_the_table_and_exact_in_json(labels, column):
    explanation = explain_window(settings(), label_rows(column, labels))
    ranked = [b.label for b in explanation.columns[0].ranked]
    lines = assert_one_visible_line_each(as_table(explanation, top=None))
    # monitor line, blank, the column's heading, the bins' header, one line per bin: nothing forged
    assert len(lines) == 4 + len(labels)
    assert lines[2].startswith(f"{visible(column)} (feature): ")
    for line, label in zip(lines[4:], ranked, strict=True):
        assert line[2:].startswith(visible(label))
    text = as_json(explanation, top=None)
    assert_one_visible_line_each(text)  # JSON escapes them itself
    document = json.loads(text)
    assert document["columns"][0]["column"] == column
    assert [b["label"] for b in document["columns"][0]["top_bins"]] == ranked  # exactly as stored


def test_escape_sequences_and_bidi_controls_reach_the_terminal_escaped(config_file, engine):
    # A category of ESC [ 2 J (clear screen), an OSC 8 hyperlink, a CR LF forging a row, and a
    # right-to-left override that showed "gnp.exe" as "exe.png".
    labels = ["\x1b[2J", "\x1b]8;;http://evil\x1b\\DE\x1b]8;;\x1b\\", "FR\r\n  US  9  0.9", "\u202egnp.exe"]
    store(engine, label_rows("country\u2066", labels))
    result = explain(config_file, "--top", "10")
    assert result.exit_code == 0, result.output
    lines = assert_one_visible_line_each(result.output)
    assert lines[2].startswith("country\\u2066 (feature)")
    shown = [line.split()[0] for line in lines[4:4 + len(labels)]]
    assert sorted(shown) == sorted(["\\x1b[2J", "\\x1b]8;;http://evil\\x1b\\DE\\x1b]8;;\\x1b\\",
                                    "FR\\x0d\\x0a", "\\u202egnp.exe"])
    document = json.loads(explain(config_file, "--output", "json", "--top", "10").output)
    assert sorted(b["label"] for b in document["columns"][0]["top_bins"]) == sorted(labels)


def test_an_unknown_column_error_shows_stored_names_escaped():
    explanation = explain_window(settings(), label_rows("\x1b[2Jcountry", ["DE"]))
    with pytest.raises(ConfigError) as raised:
        only_columns(explanation, ["nope\r"])
    assert is_visible(str(raised.value)) and "\\x1b[2Jcountry" in str(raised.value)


def test_an_unknown_monitor_name_is_echoed_escaped(config_file):
    result = CliRunner().invoke(main, ["explain", "--config", str(config_file), "--monitor", "x\x1b]0;t\x07\u202e"])
    assert result.exit_code == 2 and "no monitor named x\\x1b]0;t\\x07\\u202e (configured: shop)" in result.output
    assert is_visible(result.output.replace("\n", ""))
