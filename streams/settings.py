"""Settings, read from the environment once at start-up into a frozen object.

Nothing on the per-message path re-reads the environment: components receive the
``Settings`` instance (or the values they need) when they are built.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from streams.errors import ConfigurationError
from streams.silo import SiloMode


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


def _state_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("STREAMS_STATE_DIR", ".streams")).absolute()


def _stack_file(env: Mapping[str, str]) -> dict[str, Any]:
    """Addresses written by ``streams dev start``, used when the env names none."""
    path = _state_dir(env) / "stack.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name}={raw!r} is not an integer") from exc
    if value < minimum:
        raise ConfigurationError(f"{name}={value} must be >= {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from exc
    if value < minimum:
        raise ConfigurationError(f"{name}={value} must be >= {minimum}")
    return value


def _regex(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name) or default
    try:
        re.compile(raw)
    except re.error as exc:
        raise ConfigurationError(f"{name}={raw!r} is not a regular expression: {exc}") from exc
    return raw


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """Every knob of streams; see the README's configuration table."""

    kafka_bootstrap_servers: str
    database_url: Secret
    schema_registry_url: str | None = None
    silo_mode: SiloMode = SiloMode.MONOLITH
    topic_prefix: str = ""
    app_id: str = "streams"
    producer_name: str = field(default_factory=socket.gethostname)
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    state_dir: Path = field(default_factory=lambda: Path(".streams").absolute())
    log_level: str = "INFO"
    kafka_session_timeout: float = 10.0
    kafka_heartbeat_interval: float = 3.0
    replication_factor: int = 1
    table_store: str = "memory://"
    agent_modules: tuple[str, ...] = ()
    agents: tuple[str, ...] | None = None
    relay_concurrency: int = 1
    relay_poll_interval: float = 1.0
    relay_batch_size: int = 5_000  # amortises the per-batch ack wait and round trips
    relay_publish_timeout: float = 30.0
    metrics_port: int = 9300
    ssrf_allow: tuple[str, ...] = ()
    webhook_timeout: float = 10.0
    webhook_max_attempts: int = 5
    webhook_retry_delay: float = 300.0
    webhook_breaker_threshold: int = 10
    webhook_breaker_pause: float = 60.0
    consumer_fetch_max_wait: float | None = None
    consumer_fast_drain: bool = True  # streams/faust_drain.py
    invalidation_countdown: float = 5.0
    buffer_flush_interval: float = 5.0
    backfill_max_rate: int = 10_000
    backfill_batch_size: int = 1_000
    backfill_interval: float = 60.0
    region_names: tuple[str, ...] = ("default",)
    lag_exporter_port: int = 9308
    lag_exporter_interval: float = 5.0
    lag_exporter_groups: str = ".*"
    lag_exporter_cluster: str = "local"
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Validate the environment once; raises ``ConfigurationError`` naming the variable."""
        env = dict(os.environ if env is None else env)
        stack = _stack_file(env)
        bootstrap = env.get("KAFKA_BOOTSTRAP_SERVERS") or stack.get("kafka_bootstrap_servers")
        database = env.get("DATABASE_URL") or stack.get("database_url")
        if not bootstrap:
            raise ConfigurationError(
                "KAFKA_BOOTSTRAP_SERVERS is not set (run `streams dev start` or export it)"
            )
        if not database:
            raise ConfigurationError(
                "DATABASE_URL is not set (run `streams dev start` or export it)"
            )
        try:
            silo = SiloMode(env.get("STREAMS_SILO_MODE", "monolith").lower())
        except ValueError as exc:
            raise ConfigurationError(
                f"STREAMS_SILO_MODE={env.get('STREAMS_SILO_MODE')!r}: "
                "expected region, control or monolith"
            ) from exc
        prefix = env.get("STREAMS_TOPIC_PREFIX", "")
        if prefix and not all(c.isalnum() or c in "._-" for c in prefix):
            raise ConfigurationError(
                f"STREAMS_TOPIC_PREFIX={prefix!r} has characters Kafka refuses"
            )
        return cls(
            kafka_bootstrap_servers=str(bootstrap),
            database_url=Secret(str(database)),
            schema_registry_url=env.get("SCHEMA_REGISTRY_URL") or None,
            silo_mode=silo,
            topic_prefix=prefix,
            app_id=env.get("STREAMS_APP_ID", "streams"),
            producer_name=env.get("STREAMS_PRODUCER_NAME") or socket.gethostname(),
            web_host=env.get("STREAMS_WEB_HOST", "127.0.0.1"),
            web_port=_int(env, "STREAMS_WEB_PORT", 6066, 1),
            state_dir=_state_dir(env),
            log_level=env.get("STREAMS_LOG_LEVEL", "INFO").upper(),
            kafka_session_timeout=_float(env, "STREAMS_KAFKA_SESSION_TIMEOUT", 10.0, 1.0),
            kafka_heartbeat_interval=_float(env, "STREAMS_KAFKA_HEARTBEAT_INTERVAL", 3.0, 0.1),
            replication_factor=_int(env, "STREAMS_REPLICATION_FACTOR", 1, 1),
            table_store=env.get("STREAMS_TABLE_STORE", "memory://"),
            agent_modules=_list(env, "STREAMS_AGENT_MODULES"),
            agents=_list(env, "STREAMS_AGENTS") if env.get("STREAMS_AGENTS") else None,
            relay_concurrency=_int(env, "STREAMS_RELAY_CONCURRENCY", 1, 1),
            relay_poll_interval=_float(env, "STREAMS_RELAY_POLL_INTERVAL", 1.0, 0.01),
            relay_batch_size=_int(env, "STREAMS_RELAY_BATCH_SIZE", 5_000, 1),
            relay_publish_timeout=_float(env, "STREAMS_RELAY_PUBLISH_TIMEOUT", 30.0, 1.0),
            metrics_port=_int(env, "STREAMS_METRICS_PORT", 9300, 0),
            ssrf_allow=_list(env, "STREAMS_WEBHOOK_ALLOW_HOSTS"),
            webhook_timeout=_float(env, "STREAMS_WEBHOOK_TIMEOUT", 10.0, 0.1),
            webhook_max_attempts=_int(env, "STREAMS_WEBHOOK_MAX_ATTEMPTS", 5, 1),
            webhook_retry_delay=_float(env, "STREAMS_WEBHOOK_RETRY_DELAY", 300.0, 0.0),
            webhook_breaker_threshold=_int(env, "STREAMS_WEBHOOK_BREAKER_THRESHOLD", 10, 1),
            webhook_breaker_pause=_float(env, "STREAMS_WEBHOOK_BREAKER_PAUSE", 60.0, 0.0),
            consumer_fetch_max_wait=(
                _float(env, "STREAMS_CONSUMER_FETCH_MAX_WAIT", 1.5, 0.001)
                if env.get("STREAMS_CONSUMER_FETCH_MAX_WAIT")
                else None
            ),
            consumer_fast_drain=_int(env, "STREAMS_CONSUMER_FAST_DRAIN", 1, 0) != 0,
            invalidation_countdown=_float(env, "STREAMS_INVALIDATION_COUNTDOWN", 5.0, 0.0),
            buffer_flush_interval=_float(env, "STREAMS_BUFFER_FLUSH_INTERVAL", 5.0, 0.05),
            backfill_max_rate=_int(env, "STREAMS_BACKFILL_MAX_RATE", 10_000, 0),
            backfill_batch_size=_int(env, "STREAMS_BACKFILL_BATCH_SIZE", 1_000, 1),
            backfill_interval=_float(env, "STREAMS_BACKFILL_INTERVAL", 60.0, 0.05),
            region_names=_list(env, "STREAMS_REGION_NAMES") or ("default",),
            lag_exporter_port=_int(env, "STREAMS_LAG_EXPORTER_PORT", 9308, 0),
            lag_exporter_interval=_float(env, "STREAMS_LAG_EXPORTER_INTERVAL", 5.0, 0.1),
            lag_exporter_groups=_regex(env, "STREAMS_LAG_EXPORTER_GROUPS", ".*"),
            lag_exporter_cluster=env.get("STREAMS_LAG_EXPORTER_CLUSTER", "local"),
        )

    def with_(self, **changes: Any) -> Settings:
        """A copy with some values changed (tests and the CLI use this)."""
        return replace(self, **changes)


_cached: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, validated on first use."""
    global _cached
    if _cached is None:
        _cached = Settings.from_env()
    return _cached


def reset_settings(settings: Settings | None = None) -> None:
    """Replace (or forget) the process-wide settings; for tests and the CLI."""
    global _cached
    _cached = settings
