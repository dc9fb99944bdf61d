"""Text from the data is shown, never obeyed: the shared escape, text-mode log lines, JSON log lines."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftmon.config_file import parse_config
from driftmon.errors import ConfigError
from driftmon.logs import JsonFormatter, TextFormatter
from driftmon.textsafe import is_visible, visible
from tests.test_explain import monitor_config

BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
UNSAFE = "".join(map(chr, range(0x20))) + "".join(map(chr, range(0x7F, 0xA0))) + "\u2028\u2029" + BIDI


def test_every_control_and_bidi_character_is_escaped_visibly():
    for character in UNSAFE:
        shown = visible(f"a{character}b")
        assert shown in (f"a\\x{ord(character):02x}b", f"a\\u{ord(character):04x}b"), repr(character)
    assert visible("\x1b[31mred") == "\\x1b[31mred" and visible("\u202egnp.exe") == "\\u202egnp.exe"
    # What is not a control stays as it is: accents, CJK, emoji, a backslash, math and format syntax.
    for text in ("Zürich", "東京", "🙂", "C:\\temp", "$x^$", "{}", "%s", "\u200d"):
        assert visible(text) == text


@settings(max_examples=300)
@given(st.text())
def test_visible_leaves_nothing_to_obey_and_is_idempotent(text):
    shown = visible(text)
    assert is_visible(shown) and shown.splitlines() == [shown] * bool(shown)
    assert visible(shown) == shown
    assert visible(text) == text or not is_visible(text)


# --- log lines ------------------------------------------------------------------------------


def record(message: str, *args, **fields) -> logging.LogRecord:
    made = logging.makeLogRecord({"name": "driftmon.pipeline", "levelno": logging.ERROR, "levelname": "ERROR",
                                  "msg": message, "args": args, **fields})
    return made


HOSTILE = {"event": "run.failed", "monitor": "shop", "column": "amount\r\n12:00:00 INFO    all clear",
           "error": "value '\x1b]0;pwned\x07\u202egnp.exe'"}


def test_text_log_lines_show_control_and_bidi_characters_escaped():
    line = TextFormatter().format(record("monitor run failed: %s", HOSTILE["error"], **HOSTILE))
    assert "\n" not in line and is_visible(line)
    assert "monitor run failed: value '\\x1b]0;pwned\\x07\\u202egnp.exe'" in line
    assert "column=amount\\x0d\\x0a12:00:00 INFO    all clear" in line


def test_a_text_log_traceback_keeps_its_lines_and_escapes_the_rest():
    try:
        raise ValueError("bad value \x1b[2J\u202e")
    except ValueError:
        failure = record("run failed", exc_info=sys.exc_info())
    text = TextFormatter().format(failure)
    lines = text.split("\n")
    assert len(lines) > 2 and all(is_visible(line) for line in lines)
    assert lines[-1] == "ValueError: bad value \\x1b[2J\\u202e"


def test_json_log_lines_stay_exact_and_escape_these_characters_themselves():
    line = JsonFormatter().format(record("monitor run failed: %s", HOSTILE["error"], **HOSTILE))
    assert is_visible(line) and line.isascii()  # json.dumps writes \u001b, \u202e, \r, \n
    document = json.loads(line)
    assert document["message"] == f"monitor run failed: {HOSTILE['error']}"
    assert (document["column"], document["error"]) == (HOSTILE["column"], HOSTILE["error"])


# --- the progress bar -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["shop\x1b[2J", "shop\n", "shop\r", "sh\u202eop", "shop\u2066"])
def test_a_monitor_name_cannot_hold_what_the_progress_bar_would_obey(name):
    # backfill's bar shows "<monitor name> <window end>"; the name is the only text in it
    # and the config refuses any name outside [A-Za-z0-9_.-].
    raw = monitor_config()
    raw["monitors"][0]["name"] = name
    with pytest.raises(ConfigError):
        parse_config(raw)


def test_error_messages_of_every_command_show_control_characters_escaped(tmp_path):
    """handle_errors prints messages that may quote what the user or the data gave (an unknown
    monitor name, a driver's error): an ESC sequence or U+202E in them reaches the terminal escaped."""
    from click.testing import CliRunner

    from driftmon.cli import main

    path = tmp_path / "config.yaml"
    path.write_text("monitors:\n  - name: m\n    source: {kind: events, table: t, timestamp_column: ts}\n"
                    "    features: [{column: a}]\n", encoding="utf-8")
    hostile = "x\x1b]0;pwned\x07\u202egnp.exe"
    result = CliRunner().invoke(main, ["run-once", "--config", str(path), "--monitor", hostile])
    assert result.exit_code == 2
    assert "\x1b" not in result.output and "\u202e" not in result.output and "\a" not in result.output
    assert "x\\x1b]0;pwned\\x07\\u202egnp.exe" in result.output
