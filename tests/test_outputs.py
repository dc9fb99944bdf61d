"""run-once's printed forms, from results constructed with every field set."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

from driftmon.commands.outputs import as_json, as_table
from driftmon.outcomes import ColumnResult, RunOutcome
from driftmon.textsafe import is_visible
from driftmon.windows import TimeRange

WINDOW = TimeRange(datetime(2024, 3, 8, tzinfo=UTC), datetime(2024, 3, 8, 1, tzinfo=UTC))
REFERENCE = TimeRange(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 8, tzinfo=UTC))


def column(name: str, p_value: float | None, q_value: float | None, status: str = "critical") -> ColumnResult:
    return ColumnResult(monitor="fraud", column=name, role="feature", window=WINDOW, reference=REFERENCE,
                        samples_current=400.0, samples_reference=2000.0, missing_current=8.0, missing_ratio=0.02,
                        kl=0.375, psi=0.75, js=0.0625, statistic="kl", threshold_warning=0.1,
                        threshold_critical=0.25, status=status, p_value=p_value, q_value=q_value)


OUTCOMES = [
    RunOutcome("fraud", WINDOW, "ok", [column("amount", 1.25e-9, 2.5e-9), column("age", None, None, "ok")],
               REFERENCE),
    RunOutcome("gone", WINDOW, "failed", [], REFERENCE, error="monitor 'gone': table 'x' does not exist",
               reason="source"),
]


def test_json_carries_p_and_q_values_right_after_js():
    amount, age, _ = json.loads(as_json(OUTCOMES))
    keys = list(amount)
    assert keys[keys.index("js") + 1:keys.index("js") + 3] == ["p_value", "q_value"]
    assert (amount["p_value"], amount["q_value"]) == (1.25e-9, 2.5e-9)
    assert (age["p_value"], age["q_value"]) == (None, None)


def test_json_has_one_object_per_failed_monitor_after_the_results():
    records = json.loads(as_json(OUTCOMES))
    assert records[-1] == {"monitor": "gone", "column": None, "status": "failed",
                           "error": "monitor 'gone': table 'x' does not exist"}
    assert [r["status"] for r in records] == ["critical", "ok", "failed"]


def test_table_shows_p_and_q_values():
    header, amount, age, *_ = as_table(OUTCOMES).splitlines()
    assert header.split() == ["monitor", "column", "role", "samples", "(ref", "/", "cur)", "KL", "PSI", "JS",
                              "p", "q", "status"]
    assert amount.split() == ["fraud", "amount", "feature", "2000", "/", "400", "0.3750", "0.7500", "0.0625",
                              "1.25e-09", "2.5e-09", "critical"]
    assert age.split()[9:11] == ["-", "-"]


def test_table_shows_both_windows_samples_so_an_empty_reference_is_visible():
    # Only the current count was shown: "insufficient_data" with 400 samples hid an empty reference.
    empty = replace(column("amount", None, None, "insufficient_data"), samples_reference=0.0,
                    kl=None, psi=None, js=None)
    halves = replace(column("age", None, None, "ok"), samples_reference=1999.5, samples_current=12.25)
    lines = as_table([RunOutcome("fraud", WINDOW, "ok", [empty, halves], REFERENCE)]).splitlines()
    header, first, second = lines[:3]
    start = header.index("samples (ref / cur)")
    assert first[start:].split()[:3] == ["0", "/", "400"]
    assert second[start:].split()[:3] == ["1999.5", "/", "12.25"]  # as explain prints counts


def test_table_shows_text_from_the_data_escaped_and_json_exactly():
    # A histograms source's feature names, and a source's error message, come from the data:
    # raw, an ESC sequence cleared the screen, CR LF forged a row and U+202E reordered a name.
    hostile = replace(column("\x1b[2Jamount\u202egnp.exe", None, None), role="fea\x9bture")
    failed = RunOutcome("gone", WINDOW, "failed", [], REFERENCE, error="bad value 'x\r\nfraud  age  ok'",
                        reason="source")
    text = as_table([RunOutcome("fraud", WINDOW, "ok", [hostile], REFERENCE), failed])
    lines = text.split("\n")
    assert text.splitlines() == lines and len(lines) == 5  # header, the row, the failure, blank, windows
    assert all(is_visible(line) for line in lines)
    assert lines[1].split()[1:3] == ["\\x1b[2Jamount\\u202egnp.exe", "fea\\x9bture"]
    assert lines[2] == "gone: FAILED: bad value 'x\\x0d\\x0afraud  age  ok'"
    records = json.loads(as_json([RunOutcome("fraud", WINDOW, "ok", [hostile], REFERENCE), failed]))
    assert (records[0]["column"], records[0]["role"]) == (hostile.column, hostile.role)
    assert records[1]["error"] == failed.error
