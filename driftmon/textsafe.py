"""Text fit for a terminal, a text log line or a page: data shown, never obeyed.

Bin labels, column names, roles and error messages come from the monitored data.
Printed raw, an escape sequence in them (ESC [ …, an OSC 8 hyperlink, a window
title) is run by the terminal, a CR or LF forges table rows and log lines, and a
bidi control reorders what is shown (U+202E makes ``gnp.exe`` read ``exe.png``).
``visible`` writes each such character as its escape instead (``\\x1b``,
``\\u202e``), so that it is seen rather than obeyed. Every text output goes through
it (explain's and run-once's tables, text-mode log lines, the HTML report); JSON
outputs stay exact, because ``json.dumps`` escapes these characters itself.

A backslash is left as it is: labels such as Windows paths stay readable, at the
price that a label spelled ``\\x1b`` looks like one holding an ESC.
"""

from __future__ import annotations

import re

# C0 controls (tab, CR and LF among them), DEL and C1 controls (NEL, CSI among them);
# the line and paragraph separators, which some renderers break lines at; and the
# bidi controls: embeddings and overrides (U+202A-U+202E), isolates (U+2066-U+2069),
# the LTR and RTL marks (U+200E, U+200F) and the Arabic letter mark (U+061C).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def visible(text: object) -> str:
    """``str(text)`` with every control, line-separator and bidi-control character escaped.

    Idempotent (an escape is plain ASCII), so a cell escaped for its width may be
    escaped again as part of its line.
    """
    return _UNSAFE.sub(_escape, str(text))


def is_visible(text: str) -> bool:
    """Whether ``text`` holds none of the characters ``visible`` escapes."""
    return _UNSAFE.search(text) is None


def _escape(match: re.Match) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"
