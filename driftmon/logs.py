"""Structured logging: one line per event, JSON in containers, key=value on a terminal.

Every log call names a stable event (``extra={"event": "run.finished", ...}``);
the other ``extra`` fields become the line's fields.

Messages and fields carry text from the data (column names, source errors). A text
line shows it through ``driftmon.textsafe.visible``, so that a CR LF cannot forge a
line nor an escape sequence or bidi control reach the terminal; a JSON line keeps it
exact, ``json.dumps`` escaping those characters itself (its ``ensure_ascii``).
Every line is masked (driftmon.urls.mask_credentials): a driver's error or a
traceback may quote a URL with its password (``user:password@host``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from driftmon.textsafe import visible
from driftmon.urls import mask_credentials

LOG_FORMAT_ENV = "DRIFTMON_LOG_FORMAT"
LOG_LEVEL_ENV = "DRIFTMON_LOG_LEVEL"

# Attributes every LogRecord has; anything else came from ``extra``.
_STANDARD_ATTRIBUTES = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRIBUTES}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return mask_credentials(json.dumps(line, default=str))


class TextFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL message  key=value ...`` on one line, a traceback below it."""

    def format(self, record: logging.LogRecord) -> str:
        time = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        extras = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{time} {record.levelname:<7} {record.getMessage()}"
        line = visible(f"{line}  {extras}" if extras else line)
        if record.exc_info:
            # A traceback is lines of its own; only what is inside each line is escaped (a
            # message's own line break still starts a line, as in any Python traceback).
            line += "\n" + "\n".join(visible(part) for part in self.formatException(record.exc_info).split("\n"))
        return mask_credentials(line)


def configure_logging(stream=None) -> None:
    """JSON when ``DRIFTMON_LOG_FORMAT=json`` or when stderr is not a terminal."""
    stream = stream or sys.stderr
    wanted = os.environ.get(LOG_FORMAT_ENV, "").lower()
    use_json = wanted == "json" or (wanted != "text" and not stream.isatty())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get(LOG_LEVEL_ENV, "INFO").upper())
    # Alembic narrates every connection and APScheduler every job execution;
    # driftmon logs each outcome itself. Their warnings and errors still show.
    for chatty in ("alembic", "apscheduler.executors", "apscheduler.scheduler"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # PyHive's thrift logs its own traceback at ERROR when a Spark server is down;
    # driftmon reports that failure itself, once, naming the monitor and table.
    logging.getLogger("thrift").setLevel(logging.CRITICAL)


class _AboveBar:
    """A stream that writes each log line above the progress bars (tqdm.write), which
    clears the bar, writes the line and draws the bar again below it."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=self.stream, end="")

    def flush(self) -> None:
        self.stream.flush()


@contextmanager
def above_progress_bar(bar) -> Iterator[None]:
    """While ``bar`` (a tqdm bar) shows, log lines go above it instead of through it.

    The lines themselves are unchanged (JSON stays JSON); only the terminal's bar is
    cleared before and redrawn after each one. A disabled bar changes nothing.
    """
    if getattr(bar, "disable", True):
        yield
        return
    handlers = [h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler]
    previous = [h.setStream(_AboveBar(h.stream)) for h in handlers]
    try:
        yield
    finally:
        for handler, stream in zip(handlers, previous, strict=True):
            handler.setStream(stream)
