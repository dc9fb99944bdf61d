"""Who may see /report: the pages can be turned off, or require a bearer token from the environment.

The drift reports name monitors, columns and their distributions: what a
deployment that exposes the port may not want anyone to read. ``server.report:
false`` turns the pages off (404, and nothing links to them);
``server.report_token_env`` names the environment variable that holds the
token they then require, as ``Authorization: Bearer <token>``. The token itself
never appears in the config file, and it is compared in constant time. The
probes and /metrics stay open either way: a scraper or a kubelet has no token.
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from driftmon.errors import ConfigError

if TYPE_CHECKING:
    from driftmon.config import ServerConfig

# RFC 6750's b64token: what a bearer token may be made of.
_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
# Shorter than this is guessable: refused on start rather than served.
MIN_TOKEN_CHARS = 16
_CHALLENGE = 'Bearer realm="driftmon report"'


@dataclass(frozen=True)
class ReportAccess:
    """Whether /report is served, and the token it requires (None: none)."""

    enabled: bool = True
    token: bytes | None = None

    @classmethod
    def from_config(cls, server: ServerConfig | None, environ: Mapping[str, str] = os.environ) -> ReportAccess:
        """From ``server.report`` and ``server.report_token_env`` (None: the defaults), reading the token.

        A token variable that is named but unset, empty or weak is a ConfigError: the
        pages would otherwise be served to anyone, the very thing the setting asks not to do.
        """
        if server is None:
            return cls()
        if not server.report or server.report_token_env is None:
            return cls(enabled=server.report)
        return cls(enabled=True, token=_token_from(server.report_token_env, environ))

    def challenge(self, authorization: str | None) -> str | None:
        """None when the request may see the pages, else the ``WWW-Authenticate`` value of its 401."""
        if self.token is None:
            return None
        scheme, _, given = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return _CHALLENGE
        # Bytes as they came (headers are read as latin-1), so any header compares, in constant time.
        if hmac.compare_digest(given.strip().encode("latin-1"), self.token):
            return None
        return f'{_CHALLENGE}, error="invalid_token"'


def _token_from(variable: str, environ: Mapping[str, str]) -> bytes:
    token = environ.get(variable, "").strip()
    key = "server.report_token_env"
    if not token:
        raise ConfigError(f"{key}: the environment variable {variable} is not set or empty; set it to the "
                          f"token /report requires (e.g. openssl rand -hex 32), or remove {key}")
    if len(token) < MIN_TOKEN_CHARS or not _B64TOKEN.match(token):
        raise ConfigError(f"{key}: the token in {variable} must be at least {MIN_TOKEN_CHARS} characters of "
                          "letters, digits and -._~+/ (e.g. openssl rand -hex 32)")
    return token.encode("ascii")
