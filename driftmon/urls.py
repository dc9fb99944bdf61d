"""Database URLs as text: the checks config loading makes, and credentials masked in any string.

Nothing here imports SQLAlchemy (0.3 s), so that loading the configuration stays
light; driftmon/store/database.py parses URLs for real and builds on these.

Masking is not limited to well-formed URLs: a URL typed without its scheme
(``alice:PW@host/db``), or a driver's error message quoting one, carries the
password just as well, so anything shaped like ``user:password@`` is masked
wherever it appears in a string.
"""

from __future__ import annotations

import re

HIDDEN = "***"

# A URL's scheme, as SQLAlchemy reads one (``name://``, the name of letters, digits, _ and +).
_SCHEME = re.compile(r"^\s*(?P<name>[\w+]+)://")

# ``scheme://user:password@`` (the user may be empty), or ``user:password@`` starting a token
# (after whitespace, a quote, a bracket, ``,``, ``;``, ``=``, or at the start); the user may hold
# an ``@`` itself (Azure's ``user@server``). The password runs to the LAST ``@`` of its run of
# non-blank characters: an unencoded ``@`` in a password (``p@ss``) leaves no part of it shown.
# ``sqlite:////a:b@c`` is a path, not credentials: a bare user is never followed by ``//``.
_CREDENTIALS = re.compile(r"""
    (?P<user>
        (?<![\w+.\-])[A-Za-z][\w+.\-]*://[^\s:/?#'"<>]*
      | (?<![^\s'"(\[{<,;=])[^\s:/?#'"<>()\[\]{},;=]+(?=:(?!//))
    )
    :(?P<password>\S*)@
""", re.VERBOSE)
_BLANKS = re.compile(r"(\s+)")
# Query parameters that carry secrets (psycopg takes ?password=, libpq ?sslpassword=, and
# warehouse drivers tokens and keys).
SECRET_PARAMETER = re.compile(r"pass|pwd|secret|token|key|credential|auth", re.IGNORECASE)
# A query parameter, ``?name=value`` or ``&name=value``: its name is checked apart, so that
# the search stays linear however long the text.
_QUERY_PARAMETER = re.compile(r"(?P<name>[?&][^=&#?\s]*=)(?P<value>[^&#\s]*)")


def mask_credentials(text: str) -> str:
    """``text`` with every ``user:password@`` password and secret query parameter shown as ``***``.

    Applied to URLs that do not parse, to error messages (which may quote a URL,
    whole or in part), to log lines and to the errors stored in ``runs.error``.
    It errs towards masking: ``a:b@c`` in any string reads as credentials.
    """
    text = "".join(_mask_word(word) for word in _BLANKS.split(text))
    return _QUERY_PARAMETER.sub(_mask_parameter, text)


def _mask_word(word: str) -> str:
    """One run of non-blank characters, masked up to its last ``@``.

    Searching only there keeps the work linear in the word's length: every
    candidate ``user:`` has an ``@`` after it, so the first one found matches
    and consumes the rest (a search of the whole word would retry each one).
    """
    last = word.rfind("@")
    if last < 0 or ":" not in word[:last]:
        return word
    head = _CREDENTIALS.sub(lambda match: f"{match['user']}:{HIDDEN}@", word[:last + 1])
    return head + word[last + 1:]


def _mask_parameter(match: re.Match) -> str:
    """A secret query parameter's value as ``***``; any other parameter as it was."""
    return match["name"] + HIDDEN if SECRET_PARAMETER.search(match["name"]) else match[0]


def scheme_problem(url: str) -> str | None:
    """Why ``url`` is not a database URL for lack of a scheme, or None; never quotes the URL.

    ``alice:PW@host/db`` (the scheme forgotten) would otherwise reach SQLAlchemy,
    whose error, like any message about the URL, shows the password.
    """
    if not url.strip():
        return "is empty: give a database URL such as postgresql+psycopg://USER:PASSWORD@HOST/DB"
    if _SCHEME.match(url):
        return None
    return ("is not a database URL: it has no scheme (the part before ://); write e.g. "
            "postgresql+psycopg://USER:PASSWORD@HOST/DB or sqlite:///PATH/TO/FILE.db")


# --- which backends hold the results -----------------------------------------------------

RESULTS_BACKENDS = ("sqlite", "postgresql")
# Why a backend cannot hold driftmon's results (it may still be a source).
_NOT_A_STORE = {
    "mysql": "MariaDB/MySQL upsert with ON DUPLICATE KEY UPDATE, where driftmon's leases, results and "
             "slices rely on INSERT ... ON CONFLICT with a condition and RETURNING, and their DATETIME keeps "
             "no fraction of a second unless declared DATETIME(6)",
}
# Spellings SQLAlchemy does not take, with the one it does.
DIALECT_SPELLINGS = {"postgres": "postgresql", "pgsql": "postgresql", "psql": "postgresql",
                     "mariadb+mysqldb": "mysql+mysqldb", "sqlite3": "sqlite"}


def respelled(drivername: str) -> str | None:
    """``postgresql+psycopg2`` for ``postgres+psycopg2``: the scheme SQLAlchemy takes, or None."""
    backend, plus, driver = drivername.partition("+")
    if drivername in DIALECT_SPELLINGS:
        return DIALECT_SPELLINGS[drivername]
    return DIALECT_SPELLINGS[backend] + plus + driver if backend in DIALECT_SPELLINGS else None


def backend_problem(backend: str) -> str | None:
    """Why a database of ``backend`` (``postgresql``, ``mysql``, ...) cannot hold the results, or None."""
    if backend in RESULTS_BACKENDS:
        return None
    why = _NOT_A_STORE.get(backend, f"{backend} is not one of them")
    return (f"driftmon keeps its results in SQLite or PostgreSQL ({why}); "
            f"{backend} works as a source: monitors[].source.url")


def results_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be ``database.url``: no scheme, or a backend that cannot hold results.

    A misspelt scheme (``postgres://``) passes: check_url names the spelling it meant.
    """
    problem = scheme_problem(url)
    if problem:
        return problem
    drivername = _SCHEME.match(url)["name"]
    backend = (respelled(drivername) or drivername).partition("+")[0]
    return backend_problem(backend)
