"""The pieces a setting is declared with: parsers (text -> value -> text), bounds, groups.

``streams.settings`` declares every field with a ``Declaration``; this module holds what
those declarations are made of, so the settings module reads as the list of knobs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from streams.errors import ConfigurationError
from streams.silo import SiloMode

# The built-in agents, by the last part of their module name (``STREAMS_AGENTS``). Kept
# here, not read from ``streams.agents``, so that settings never import Faust; a test
# checks the two lists agree.
AGENT_NAMES: tuple[str, ...] = (
    "backfill",
    "invalidation",
    "project_configs",
    "resource_changes",
    "webhook_delivery",
    "buffers",
    "jobs",
    "schedules",
)
LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS: tuple[str, ...] = ("text", "json")


class Group(Enum):
    """The component a setting belongs to (sections of the configuration table)."""

    KAFKA = "Kafka"
    DATABASE = "Database"
    PROCESS = "Worker and web server"
    LOGGING = "Logging"
    RELAY = "Relay"
    WEBHOOKS = "Webhooks"
    CONFIGS = "Config invalidation"
    BUFFERS = "Buffers"
    BACKFILL = "Backfill"
    LAG = "Lag exporter"
    SCHEDULES = "Schedules, reports and mail"


class Secret:
    """A string that does not show itself in reprs, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Parser:
    """Text from the environment to a value (``ValueError`` says why not), and back."""

    load: Callable[[str], Any]
    render: Callable[[Any], str] = str


@dataclass(frozen=True)
class Declaration:
    """Everything about one setting, written once."""

    env: str
    group: Group
    doc: str
    parser: Parser
    low: float | None = None
    high: float | None = None
    # Non-empty: the variable must be set, and this says where the value comes from.
    required: str = ""
    # The default as documented, for defaults computed at start-up (hostname, paths).
    shown: str | None = None

    def load(self, raw: str) -> Any:
        """The value of ``raw``; ``ConfigurationError`` names the variable and the bound."""
        try:
            value = self.parser.load(raw.strip())
        except ValueError as exc:
            raise ConfigurationError(f"{self.env}={raw!r}: {exc}") from None
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.low is not None and value < self.low:
                raise ConfigurationError(f"{self.env}={value} must be >= {_num(self.low)}")
            if self.high is not None and value > self.high:
                raise ConfigurationError(f"{self.env}={value} must be <= {_num(self.high)}")
        return value

    def shown_default(self, value: Any) -> str:
        """The default for documentation and ``--help``."""
        if self.shown is not None:
            return self.shown
        if value is None:
            return "unset"
        rendered = self.parser.render(value)
        return f"`{rendered}`" if rendered else "empty"

    def bounds_text(self) -> str:
        if self.low is not None and self.high is not None:
            return f" ({_num(self.low)} to {_num(self.high)})"
        if self.low is not None:
            return f" (at least {_num(self.low)})"
        return ""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("not an integer") from None


def _float(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError("not a number") from None


def number(kind: type[int] | type[float]) -> Parser:
    """An integer or a number; bounds come from the declaration."""
    return Parser(_int if kind is int else _float, _num)


def _silo(raw: str) -> SiloMode:
    try:
        return SiloMode(raw.lower())
    except ValueError:
        raise ValueError("expected region, control or monolith") from None


def _prefix(raw: str) -> str:
    if not all(c.isalnum() or c in "._-" for c in raw):
        raise ValueError("has characters Kafka refuses in a topic name")
    return raw


def _flag(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 1 or 0")


def _level(raw: str) -> str:
    name = raw.upper()
    name = "WARNING" if name == "WARN" else name
    if name not in LOG_LEVELS:
        raise ValueError(f"not a log level; expected one of {', '.join(LOG_LEVELS)}")
    return name


def _log_format(raw: str) -> str:
    if raw.lower() not in LOG_FORMATS:
        raise ValueError(f"expected one of {', '.join(LOG_FORMATS)}")
    return raw.lower()


def _names(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _agents(raw: str) -> tuple[str, ...]:
    names = _names(raw)
    return () if names == ("none",) else names


def _regex(raw: str) -> str:
    try:
        re.compile(raw)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from None
    return raw


def _or_empty(render: Callable[[Any], str]) -> Callable[[Any], str]:
    # An unset optional value becomes "", which the loader reads back as unset.
    return lambda v: "" if v is None else render(v)


text = Parser(str)
optional_text = Parser(str, _or_empty(str))
secret = Parser(Secret, lambda s: s.get())
silo = Parser(_silo, lambda s: s.value)
prefix = Parser(_prefix)
flag = Parser(_flag, lambda b: "1" if b else "0")
level = Parser(_level)
log_format = Parser(_log_format)
name_list = Parser(_names, ",".join)
agents = Parser(_agents, _or_empty(lambda names: ",".join(names) or "none"))


def _catch_up(raw: str) -> str:
    if raw.lower() not in ("once", "skip", "all"):
        raise ValueError("expected once, skip or all")
    return raw.lower()


def _schedule_spec(raw: str) -> str:
    from streams.schedules.spec import parse_spec

    parse_spec(raw)  # CrontabError is a ValueError naming what is wrong
    return raw


def _smtp_url(raw: str) -> Secret:
    from urllib.parse import urlsplit

    parts = urlsplit(raw)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("expected smtp://[user:password@]host[:port] or smtps://...")
    return Secret(raw)


def _gc_thresholds(raw: str) -> tuple[int, int, int] | None:
    if raw.lower() in ("", "python"):
        return None
    parts = raw.split(",")
    try:
        got = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError("expected three integers (young,middle,old) or python") from None
    if len(got) != 3 or min(got) < 1:
        raise ValueError("expected three integers of at least 1 (young,middle,old) or python")
    return got[0], got[1], got[2]


catch_up = Parser(_catch_up)
gc_thresholds = Parser(
    _gc_thresholds, lambda t: "python" if t is None else ",".join(str(n) for n in t)
)
schedule_spec = Parser(_schedule_spec)
smtp_url = Parser(_smtp_url, lambda s: s.get())
path = Parser(lambda raw: Path(raw).absolute())
regex = Parser(_regex)
optional_number = Parser(_float, _or_empty(_num))


KAFKA, DB, PROC, LOG = Group.KAFKA, Group.DATABASE, Group.PROCESS, Group.LOGGING
RELAY, HOOKS, CONFIGS, BUFFERS = Group.RELAY, Group.WEBHOOKS, Group.CONFIGS, Group.BUFFERS
BACKFILL, LAG, SCHED = Group.BACKFILL, Group.LAG, Group.SCHEDULES
PORT = {"low": 1, "high": 65535}
PORT_OR_OFF = {"low": 0, "high": 65535}


def declare(env: str, group: Group, doc: str, parser: Any, **kw: Any) -> dict[str, Declaration]:
    """The field metadata of one setting (``field(metadata=declare(...))``)."""
    return {"setting": Declaration(env, group, doc, parser, **kw)}
