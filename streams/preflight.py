"""Start-up reachability checks: fail in seconds with one line, not after 30 s of noise.

Every CLI command that talks to the broker or the database calls ``check`` first. The
broker check is a plain TCP connect to each bootstrap address and then one metadata
request with librdkafka's own logging silenced (an unreachable broker otherwise floods
stderr with hundreds of lines). The database check is one psycopg connection with
``connect_timeout``. Each failure is an ``Unreachable`` whose text names the address,
the cause and the variable to fix, and never the DSN's password.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from typing import Any

from streams.errors import ConfigurationError, StreamsError
from streams.logs import redact
from streams.settings import Settings

log = logging.getLogger(__name__)

# librdkafka logs every failed connection attempt; the check reports the one cause itself.
_SILENT = logging.getLogger("streams.preflight.librdkafka")
_SILENT.addHandler(logging.NullHandler())
_SILENT.propagate = False

# Worded so that it does not look like a URL with a password (the output masks those).
DSN_SHAPE = (
    "expected postgresql://user@host[:port]/database, with an optional password, or key=value pairs"
)


class Unreachable(StreamsError, ConnectionError):
    """The broker or the database did not answer at start-up (the CLI exits 2)."""


class PortBusy(StreamsError, OSError):
    """A port this process must listen on is taken (the CLI exits 2)."""


class Refused(StreamsError, ValueError):
    """The command refuses what it was asked (e.g. an unknown replay target; exit 2)."""


def check(settings: Settings, *, kafka: bool = False, database: bool = False) -> None:
    """Raise ``Unreachable`` unless the named dependencies answer within the timeout."""
    if database:
        database_address(settings.database_url.get())  # a malformed DSN needs no network
    if kafka:
        check_kafka(settings.kafka_bootstrap_servers, settings.connect_timeout)
    if database:
        check_database(settings.database_url.get(), settings.connect_timeout)


def _addresses(servers: str) -> list[tuple[str, int]]:
    out = []
    for item in (s.strip() for s in servers.split(",")):
        if not item:
            continue
        host, _, port = item.rpartition("://")[2].rpartition(":")
        try:
            out.append((host.strip("[]") or "localhost", int(port)))
        except ValueError:
            raise ConfigurationError(
                f"KAFKA_BOOTSTRAP_SERVERS={servers!r}: {item!r} is not host:port"
            ) from None
    if not out:
        raise ConfigurationError("KAFKA_BOOTSTRAP_SERVERS is empty")
    return out


def _os_cause(exc: OSError, host: str, timeout: float) -> str:
    if isinstance(exc, socket.gaierror):
        return f"unknown host {host!r}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"no answer within {timeout:g} s"
    return _strerror(exc) or type(exc).__name__


def _strerror(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def check_kafka(servers: str, timeout: float) -> None:
    """TCP connect to the bootstrap addresses, then one metadata request."""
    deadline = time.monotonic() + timeout
    causes = []
    for host, port in _addresses(servers):
        try:
            with socket.create_connection((host, port), max(0.1, deadline - time.monotonic())):
                break
        except OSError as exc:
            causes.append(_os_cause(exc, host, timeout))
    else:
        raise Unreachable(
            f"cannot reach Kafka at {servers} ({'; '.join(dict.fromkeys(causes))}) — "
            "is the broker running? see KAFKA_BOOTSTRAP_SERVERS"
        )
    _metadata(servers, max(0.5, deadline - time.monotonic()), timeout)


def _metadata(servers: str, remaining: float, timeout: float) -> None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    config: dict[str, Any] = {"bootstrap.servers": servers, "logger": _SILENT, "log_level": 0}
    deadline = time.monotonic() + remaining
    while True:
        try:
            AdminClient(config).list_topics(timeout=max(0.2, deadline - time.monotonic()))
            return
        except KafkaException as exc:
            # A busy broker may drop a connection before it answers: try again while
            # the budget lasts, so only a broker that stays silent fails the command.
            if deadline - time.monotonic() > 0.5:
                time.sleep(0.2)
                continue
            cause = exc.args[0].str() if exc.args else str(exc)
        raise Unreachable(
            f"cannot reach Kafka at {servers} (the port answers, but no Kafka metadata "
            f"within {timeout:g} s: {cause}) — is it a Kafka broker? see KAFKA_BOOTSTRAP_SERVERS"
        ) from None


def database_address(dsn: str) -> str:
    """``host:port[/database]`` of a DSN, fit to print; ``ConfigurationError`` if it does
    not parse (the message never repeats the DSN: it may hold the password)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except Exception:  # psycopg.ProgrammingError quotes the DSN: say why without it
        raise ConfigurationError(
            f"DATABASE_URL is not a valid PostgreSQL DSN ({DSN_SHAPE})"
        ) from None
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = str(params.get("port") or 5432)
    if not port.isdigit():
        raise ConfigurationError(f"DATABASE_URL has a port that is not a number ({DSN_SHAPE})")
    db = params.get("dbname")
    return f"{host}:{port}" + (f"/{db}" if db else "")


def check_database(dsn: str, timeout: float) -> None:
    """One connection and ``SELECT 1`` within ``timeout`` (libpq counts whole seconds)."""
    import psycopg

    address = database_address(dsn)
    try:
        with psycopg.connect(
            dsn, connect_timeout=max(2, math.ceil(timeout)), autocommit=True
        ) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise Unreachable(
            f"cannot connect to PostgreSQL at {address} ({database_cause(exc)}) — is the "
            "database running? see DATABASE_URL"
        ) from None


def database_cause(exc: BaseException) -> str:
    """The last line of libpq's answer that says why, in one short phrase."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    first = lines[0] if lines else type(exc).__name__
    cause = first.rpartition(" failed: ")[2] if " failed: " in first else first
    cause = cause.removeprefix("connection failed: ").removeprefix("FATAL:  ")
    return redact(cause[:1].lower() + cause[1:])


def check_port_free(host: str, port: int, variable: str, what: str) -> None:
    """Raise ``PortBusy`` naming the port and its variable when ``port`` is taken."""
    if not port:
        return
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the HTTP server does
        try:
            s.bind((host, port))
        except OSError as exc:
            raise PortBusy(
                f"cannot listen on {host}:{port} for {what} ({_strerror(exc)}; another one "
                f"running?) — set {variable} to a free port, or 0 for none"
            ) from None


DIRECT_PROBE_TIMEOUT = 1.0  # seconds for the direct connection that names the cause


class DatabaseProbe:
    """The worker's ``/health`` view of PostgreSQL: one ``SELECT 1`` through its pool,
    bounded by the connect timeout. Logs the cause when the database goes away (once, not
    per probe) and when it is back."""

    def __init__(self, pools: Any, settings: Settings) -> None:
        self.pools = pools  # streams.runtime.PoolSource (not imported: no Faust here)
        self.dsn = settings.database_url
        self.timeout = settings.connect_timeout
        self.down: str | None = None

    async def cause(self) -> str | None:
        """``None`` when the database answers, else one short phrase saying why not."""
        import asyncio

        try:
            async with asyncio.timeout(self.timeout):
                pool = await self.pools.get()
                async with pool.connection(timeout=self.timeout) as conn:
                    await conn.execute("SELECT 1")
        except Exception as exc:  # every failure means "not ready"; the cause is logged
            try:  # bounded too: a frozen server accepts TCP and never answers
                direct = await asyncio.wait_for(self._direct_cause(), DIRECT_PROBE_TIMEOUT)
            except TimeoutError:
                direct = None
            cause = direct or database_cause(exc) or "no answer"
            if self.down is None:
                log.error("worker.database.unreachable", extra={"cause": cause})
            self.down = cause
            return cause
        if self.down is not None:
            log.info("worker.database.recovered", extra={"was": self.down})
        self.down = None
        return None

    async def _direct_cause(self) -> str | None:
        """The pool only says it timed out; one direct connection says why."""
        import psycopg

        try:
            conn = await psycopg.AsyncConnection.connect(
                self.dsn.get(), connect_timeout=max(2, math.ceil(self.timeout))
            )
            await conn.close()
        except psycopg.Error as exc:
            return database_cause(exc)
        return None
