"""One log format for every streams process: the CLI, the relay and the Faust worker.

Code logs a dotted event name with ``extra=`` fields (``log.warning("relay.publish.failed",
extra={"table": ..., "outbox_id": ...})``). The formatter prints the event and every
field, as ``key=value`` text or, with ``STREAMS_LOG_FORMAT=json``, as one JSON object a
line. Secrets never reach the output: ``Secret`` values print masked, and the password of
any DSN (URL or ``password=`` form, and the one ``DATABASE_URL`` carries) is replaced.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import sys
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from streams.settings_parse import Secret

MASK = "***"
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s'\"]+@")
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)('[^']*'|[^\s'\"]+)", re.IGNORECASE)
_BARE = re.compile(r"^[^\s=\"']+$")


def dsn_password(dsn: str) -> str | None:
    """The password a DSN (URL or ``key=value`` form) carries, if any."""
    if "://" in dsn:
        try:
            return urlsplit(dsn).password or None
        except ValueError:
            return None
    match = _KV_PASSWORD.search(dsn)
    return match.group(2).strip("'") if match else None


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with DSN passwords and the given secret strings masked."""
    text = _URL_PASSWORD.sub(rf"\g<head>{MASK}@", text)
    text = _KV_PASSWORD.sub(rf"\g<head>{MASK}", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def env_secrets(env: dict[str, str] | None = None) -> tuple[str, ...]:
    """Secret strings of this process's environment: the ``DATABASE_URL`` password."""
    env = dict(os.environ) if env is None else env
    password = dsn_password(env.get("DATABASE_URL", ""))
    return (password,) if password else ()


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record, in the order they were given."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _plain(value: Any) -> Any:
    """A JSON-able copy of a field value; secrets masked, everything else as text."""
    if isinstance(value, Secret):
        return MASK
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


class Formatter(logging.Formatter):
    """``<time> <LEVEL> <logger> <event> key=value ...``, or one JSON object a line."""

    def __init__(self, json_lines: bool = False, secrets: Iterable[str] | None = None) -> None:
        super().__init__()
        self.json_lines = json_lines
        self.secrets = tuple(env_secrets() if secrets is None else secrets)

    def _clean(self, value: Any) -> Any:
        # Redact each value, not the finished line, so a mask never eats a JSON quote.
        if isinstance(value, str):
            return redact(value, self.secrets)
        if isinstance(value, list):
            return [self._clean(v) for v in value]
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        return value

    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created, dt.UTC)
        head: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        extra = {k: _plain(v) for k, v in fields_of(record).items() if k not in head}
        error = self.formatException(record.exc_info) if record.exc_info else ""
        if record.stack_info:
            error = "\n".join(filter(None, (error, self.formatStack(record.stack_info))))
        line = self._clean({**head, **extra, **({"exception": error} if error else {})})
        if self.json_lines:
            return json.dumps(line, ensure_ascii=False)
        text = " ".join(str(line[k]) for k in head)
        text += "".join(f" {k}={_text(line[k])}" for k in extra)
        return text + (f"\n{line['exception']}" if error else "")


def _text(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        value = ",".join(str(v) for v in value)  # tables=region_outbox,control_outbox
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if _BARE.match(text) else json.dumps(text, ensure_ascii=False)


def configure(level: str, log_format: str, stream: Any = None) -> None:
    """Send every log record of this process through one ``Formatter`` (CLI and relay)."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(Formatter(json_lines=log_format == "json"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def dict_config(level: str, log_format: str) -> dict[str, Any]:
    """The same set-up as a ``logging.config`` dict, for Faust/mode, which configure
    logging themselves when the worker starts (``faust.Worker(logging_config=...)``)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"streams": {"()": Formatter, "json_lines": log_format == "json"}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "streams",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level.upper(), "handlers": ["default"]},
    }
