"""The console's optional token and its CSRF guard for the replay form.

With ``STREAMS_CONSOLE_TOKEN`` set, every console request must carry it: as an
``Authorization: Bearer`` header, as the cookie set after the login form, or once
as ``?token=`` (which sets the cookie). Without a token the console relies on the
bind address alone. The replay POST always needs the CSRF field, a keyed hash the
pages embed, and a same-origin ``Origin`` when the browser sends one: another site
cannot read the pages, so it cannot forge the form.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

COOKIE = "streams_console_token"
CSRF_FIELD = "csrf"


@dataclass(frozen=True)
class Credentials:
    """What a request carried that may hold the token."""

    authorization: str = ""
    cookie: str = ""
    query: str = ""


@dataclass(frozen=True)
class Guard:
    """Checks console requests against the configured token (``None``: no token)."""

    token: str | None
    csrf_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @property
    def enabled(self) -> bool:
        return bool(self.token)

    def _matches(self, candidate: str) -> bool:
        assert self.token is not None
        return bool(candidate) and hmac.compare_digest(
            candidate.encode("utf-8", "replace"), self.token.encode()
        )

    def allows(self, creds: Credentials) -> bool:
        """True when no token is configured or the request carries it."""
        if not self.token:
            return True
        bearer = creds.authorization
        if bearer[:7].lower() == "bearer " and self._matches(bearer[7:].strip()):
            return True
        return self._matches(creds.cookie) or self._matches(creds.query)

    def logs_in(self, creds: Credentials) -> bool:
        """True when the request logs in with ``?token=`` (the cookie should be set)."""
        return self.enabled and self._matches(creds.query)

    def csrf_token(self) -> str:
        """The value the replay form carries; stable for this process and token."""
        material = b"replay:" + (self.token or "").encode()
        return hmac.new(self.csrf_key, material, hashlib.sha256).hexdigest()

    def csrf_ok(self, submitted: str, headers: Mapping[str, str], host: str) -> bool:
        """The form's CSRF field matches and the browser's Origin (if any) is this host."""
        if not hmac.compare_digest(
            submitted.encode("utf-8", "replace"), self.csrf_token().encode()
        ):
            return False
        origin = headers.get("Origin", "")
        if origin:
            return origin.split("://", 1)[-1] == host  # "null" (sandboxed) never matches
        return headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")
