"""Schedule specs as text (settings, the CLI): ``every 15s`` / ``every 2m`` / ``every 1h``
/ ``every 1d``, or a five-field crontab."""

from __future__ import annotations

import re

from streams.schedules.crontab import Crontab, CrontabError

_EVERY = re.compile(r"^every\s+(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_spec(text: str) -> float | Crontab:
    """An interval in seconds or a crontab; ``CrontabError`` (a ``ValueError``) if neither."""
    match = _EVERY.match(text.strip().lower())
    if match:
        seconds = float(match.group(1)) * _UNIT[match.group(2)]
        if seconds < 0.1:
            raise CrontabError(f"{text!r}: an interval must be at least 0.1 s")
        return seconds
    if text.strip().lower().startswith("every"):
        raise CrontabError(f"{text!r}: expected 'every <n>s|m|h|d'")
    return Crontab.parse(text)
