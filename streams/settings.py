"""Settings, read from the environment once at start-up into a frozen object.

Each field of ``Settings`` is declared once, with its environment variable, parser,
bounds, default, component group and whether it is a secret (``Declaration``). The one
loader (``Settings.from_env``), the way back to an environment (``Settings.to_env``),
the ``--help`` defaults and the README's configuration table (``markdown_table``) all
read those declarations. Adding a setting means adding one field here.

Nothing on the per-message path re-reads the environment: components receive the
``Settings`` instance (or the values they need) when they are built.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from streams.errors import ConfigurationError
from streams.settings_parse import (
    AGENT_NAMES,
    Declaration,
    Group,
    Secret,
    agents,
    catch_up,
    flag,
    level,
    log_format,
    name_list,
    number,
    optional_number,
    optional_text,
    path,
    prefix,
    regex,
    schedule_spec,
    secret,
    silo,
    smtp_url,
    text,
)
from streams.silo import SiloMode

__all__ = ["AGENT_NAMES", "Group", "Secret", "Settings", "get_settings", "reset_settings"]

KAFKA, DB, PROC, LOG = Group.KAFKA, Group.DATABASE, Group.PROCESS, Group.LOGGING
RELAY, HOOKS, CONFIGS, BUFFERS = Group.RELAY, Group.WEBHOOKS, Group.CONFIGS, Group.BUFFERS
BACKFILL, LAG, SCHED = Group.BACKFILL, Group.LAG, Group.SCHEDULES
PORT = {"low": 1, "high": 65535}
PORT_OR_OFF = {"low": 0, "high": 65535}

# Variables that changed meaning: refused with how to say it now, never misread.
RETIRED = {
    "STREAMS_WEBHOOK_MAX_ATTEMPTS": "set STREAMS_WEBHOOK_MAX_RETRIES instead, the retries "
    "after the first attempt (MAX_ATTEMPTS=N is MAX_RETRIES=N-1; the default 5 retries "
    "means 6 attempts)",
}


def _d(env: str, group: Group, doc: str, parser: Any, **kw: Any) -> dict[str, Declaration]:
    return {"setting": Declaration(env, group, doc, parser, **kw)}


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every knob of streams; see ``markdown_table()`` for the variables."""

    kafka_bootstrap_servers: str = field(
        metadata=_d(
            "KAFKA_BOOTSTRAP_SERVERS",
            KAFKA,
            "broker addresses; when set, `streams up` starts no embedded broker",
            text,
            required="export it (`streams dev start` prints the line), or run `streams up`",
        )
    )
    database_url: Secret = field(
        metadata=_d(
            "DATABASE_URL",
            DB,
            "PostgreSQL DSN (a secret: never printed); when set, `streams up` starts no "
            "embedded server",
            secret,
            required="export it (`streams dev start` prints the line), or run `streams up`",
        )
    )
    connect_timeout: float = field(
        default=5.0,
        metadata=_d(
            "STREAMS_CONNECT_TIMEOUT",
            PROC,
            "how long every command waits for the broker and the database at start-up "
            "before it fails with one line, seconds",
            number(float),
            low=0.1,
        ),
    )
    schema_registry_url: str | None = field(
        default=None,
        metadata=_d(
            "SCHEMA_REGISTRY_URL",
            KAFKA,
            "write Confluent Schema Registry framing (subjects `<topic>-value`); both "
            "framings are always read",
            optional_text,
        ),
    )
    silo_mode: SiloMode = field(
        default=SiloMode.MONOLITH,
        metadata=_d(
            "STREAMS_SILO_MODE",
            PROC,
            "`region`, `control` or `monolith`: which agents run and which topics may be "
            "published to",
            silo,
        ),
    )
    topic_prefix: str = field(
        default="",
        metadata=_d(
            "STREAMS_TOPIC_PREFIX",
            KAFKA,
            "prepended to every topic name (multi-tenant clusters, test isolation)",
            prefix,
        ),
    )
    app_id: str = field(
        default="streams",
        metadata=_d("STREAMS_APP_ID", PROC, "Faust app id = consumer group of the worker", text),
    )
    producer_name: str = field(
        default_factory=socket.gethostname,
        metadata=_d(
            "STREAMS_PRODUCER_NAME",
            KAFKA,
            "`streams-producer` header and client id",
            text,
            shown="hostname",
        ),
    )
    web_host: str = field(
        default="127.0.0.1",
        metadata=_d("STREAMS_WEB_HOST", PROC, "bind address of the worker web server", text),
    )
    web_port: int = field(
        default=6066,
        metadata=_d(
            "STREAMS_WEB_PORT",
            PROC,
            "worker web server (`/metrics`, `/health`, config API)",
            number(int),
            **PORT,
        ),
    )
    console_token: Secret = field(
        default_factory=lambda: Secret(""),
        metadata=_d(
            "STREAMS_CONSOLE_TOKEN",
            PROC,
            "token the web console (`/console`) asks for; empty: none (bind address only)",
            secret,
        ),
    )
    state_dir: Path = field(
        default_factory=lambda: Path(".streams").absolute(),
        metadata=_d(
            "STREAMS_STATE_DIR",
            PROC,
            "embedded stack data, logs, Faust data",
            path,
            shown="`.streams` (absolute)",
        ),
    )
    log_level: str = field(
        default="INFO",
        metadata=_d(
            "STREAMS_LOG_LEVEL", LOG, "log level (`streams up` prints WARNING and up)", level
        ),
    )
    log_format: str = field(
        default="text",
        metadata=_d(
            "STREAMS_LOG_FORMAT",
            LOG,
            "`text` (event name, then `key=value` fields) or `json` (one object a line)",
            log_format,
        ),
    )
    kafka_session_timeout: float = field(
        default=10.0,
        metadata=_d(
            "STREAMS_KAFKA_SESSION_TIMEOUT",
            KAFKA,
            "consumer group session, seconds; `up` and tests use 6 (Tansu joins take session / 2)",
            number(float),
            low=1.0,
        ),
    )
    kafka_heartbeat_interval: float = field(
        default=3.0,
        metadata=_d(
            "STREAMS_KAFKA_HEARTBEAT_INTERVAL",
            KAFKA,
            "consumer heartbeat, seconds; `up` and tests use 1",
            number(float),
            low=0.1,
        ),
    )
    replication_factor: int = field(
        default=1,
        metadata=_d(
            "STREAMS_REPLICATION_FACTOR",
            KAFKA,
            "for topics created by `streams topics create`",
            number(int),
            low=1,
        ),
    )
    table_store: str = field(
        default="memory://",
        metadata=_d(
            "STREAMS_TABLE_STORE", PROC, "Faust table store (`rocksdb://` in production)", text
        ),
    )
    agent_modules: tuple[str, ...] = field(
        default=(),
        metadata=_d(
            "STREAMS_AGENT_MODULES",
            PROC,
            "extra modules with `install(app, runtime)` (your own agents and topics)",
            name_list,
        ),
    )
    job_modules: tuple[str, ...] = field(
        default=(),
        metadata=_d(
            "STREAMS_JOB_MODULES",
            PROC,
            "modules declaring jobs (`streams.jobs.declare.job`) that the jobs agent runs",
            name_list,
        ),
    )
    agents: tuple[str, ...] | None = field(
        default=None,
        metadata=_d(
            "STREAMS_AGENTS",
            PROC,
            "agents this worker runs, by name (" + ", ".join(AGENT_NAMES) + ", or the last "
            "part of a `STREAMS_AGENT_MODULES` module); `none`; unset = all",
            agents,
        ),
    )
    consumer_fetch_max_wait: float | None = field(
        default=None,
        metadata=_d(
            "STREAMS_CONSUMER_FETCH_MAX_WAIT",
            PROC,
            "fetch wait of worker consumers, seconds (unset: Faust's 1.5); `up` and benches "
            "use 0.1 (Tansu holds fetches for the full wait)",
            optional_number,
            low=0.001,
        ),
    )
    consumer_fast_drain: bool = field(
        default=True,
        metadata=_d(
            "STREAMS_CONSUMER_FAST_DRAIN",
            PROC,
            "Faust's consumer hands records to streams without four tasks per record "
            "(`streams/faust_drain.py`, relies on faust-streaming 0.15 internals); `0` = "
            "Faust's own loop",
            flag,
        ),
    )
    relay_concurrency: int = field(
        default=1,
        metadata=_d(
            "STREAMS_RELAY_CONCURRENCY",
            RELAY,
            "parallel id ranges per relay pass (threads; on 2 cores 1 is fastest)",
            number(int),
            low=1,
        ),
    )
    relay_poll_interval: float = field(
        default=1.0,
        metadata=_d(
            "STREAMS_RELAY_POLL_INTERVAL",
            RELAY,
            "fallback poll when no NOTIFY arrives, seconds",
            number(float),
            low=0.01,
        ),
    )
    relay_batch_size: int = field(
        default=5_000,  # amortises the per-batch ack wait and round trips
        metadata=_d(
            "STREAMS_RELAY_BATCH_SIZE", RELAY, "rows per claim transaction", number(int), low=1
        ),
    )
    relay_publish_timeout: float = field(
        default=30.0,
        metadata=_d(
            "STREAMS_RELAY_PUBLISH_TIMEOUT",
            RELAY,
            "per-message broker timeout of the relay, seconds",
            number(float),
            low=1.0,
        ),
    )
    metrics_port: int = field(
        default=9300,
        metadata=_d(
            "STREAMS_METRICS_PORT", RELAY, "relay `/metrics` (0 = off)", number(int), **PORT_OR_OFF
        ),
    )
    ssrf_allow: tuple[str, ...] = field(
        default=(),
        metadata=_d(
            "STREAMS_WEBHOOK_ALLOW_HOSTS",
            HOOKS,
            "hosts/addresses exempt from the SSRF guard (tests: `127.0.0.1`)",
            name_list,
        ),
    )
    webhook_timeout: float = field(
        default=10.0,
        metadata=_d(
            "STREAMS_WEBHOOK_TIMEOUT",
            HOOKS,
            "HTTP timeout per delivery attempt, seconds",
            number(float),
            low=0.1,
        ),
    )
    webhook_max_retries: int = field(
        default=5,
        metadata=_d(
            "STREAMS_WEBHOOK_MAX_RETRIES",
            HOOKS,
            "retries after a delivery's first attempt before it is dead-lettered "
            "(5: 1 + 5 attempts)",
            number(int),
            low=0,
        ),
    )
    webhook_retry_delay: float = field(
        default=300.0,
        metadata=_d(
            "STREAMS_WEBHOOK_RETRY_DELAY",
            HOOKS,
            "delay between attempts, seconds",
            number(float),
            low=0.0,
        ),
    )
    resource_change_retries: int = field(
        default=5,
        metadata=_d(
            "STREAMS_RESOURCE_CHANGE_RETRIES",
            HOOKS,
            "delayed retries of a resource change whose row is not visible yet, before "
            "it is dead-lettered (`instance_missing`)",
            number(int),
            low=0,
        ),
    )
    resource_change_retry_delay: float = field(
        default=300.0,
        metadata=_d(
            "STREAMS_RESOURCE_CHANGE_RETRY_DELAY",
            HOOKS,
            "delay between those retries, seconds (sent by the relay's pump)",
            number(float),
            low=0.0,
        ),
    )
    webhook_breaker_threshold: int = field(
        default=10,
        metadata=_d(
            "STREAMS_WEBHOOK_BREAKER_THRESHOLD",
            HOOKS,
            "consecutive failures that open a target's circuit",
            number(int),
            low=1,
        ),
    )
    webhook_breaker_pause: float = field(
        default=60.0,
        metadata=_d(
            "STREAMS_WEBHOOK_BREAKER_PAUSE",
            HOOKS,
            "how long an open circuit stays open, seconds",
            number(float),
            low=0.0,
        ),
    )
    invalidation_countdown: float = field(
        default=5.0,
        metadata=_d(
            "STREAMS_INVALIDATION_COUNTDOWN",
            CONFIGS,
            "debounce grid of config invalidation, seconds",
            number(float),
            low=0.0,
        ),
    )
    buffer_flush_interval: float = field(
        default=5.0,
        metadata=_d(
            "STREAMS_BUFFER_FLUSH_INTERVAL",
            BUFFERS,
            "buffered-increment flush window, seconds",
            number(float),
            low=0.05,
        ),
    )
    backfill_max_rate: int = field(
        default=10_000,
        metadata=_d(
            "STREAMS_BACKFILL_MAX_RATE",
            BACKFILL,
            "backfill rows per minute, minus regular outbox rows (0 = no limit)",
            number(int),
            low=0,
        ),
    )
    backfill_batch_size: int = field(
        default=1_000,
        metadata=_d(
            "STREAMS_BACKFILL_BATCH_SIZE", BACKFILL, "ids per backfill batch", number(int), low=1
        ),
    )
    backfill_interval: float = field(
        default=60.0,
        metadata=_d(
            "STREAMS_BACKFILL_INTERVAL",
            BACKFILL,
            "backfill scheduler timer, seconds",
            number(float),
            low=0.05,
        ),
    )
    region_names: tuple[str, ...] = field(
        default=("default",),
        metadata=_d(
            "STREAMS_REGION_NAMES",
            BACKFILL,
            "regions that control-silo backfill rows fan out to",
            name_list,
        ),
    )
    lag_exporter_port: int = field(
        default=9308,
        metadata=_d(
            "STREAMS_LAG_EXPORTER_PORT",
            LAG,
            "lag exporter HTTP port (0 = any free port)",
            number(int),
            **PORT_OR_OFF,
        ),
    )
    lag_exporter_interval: float = field(
        default=5.0,
        metadata=_d(
            "STREAMS_LAG_EXPORTER_INTERVAL",
            LAG,
            "seconds between polls of the cluster",
            number(float),
            low=0.1,
        ),
    )
    lag_exporter_groups: str = field(
        default=".*",
        metadata=_d(
            "STREAMS_LAG_EXPORTER_GROUPS", LAG, "only consumer groups matching this regex", regex
        ),
    )
    lag_exporter_cluster: str = field(
        default="local",
        metadata=_d("STREAMS_LAG_EXPORTER_CLUSTER", LAG, "value of the `cluster_name` label", text),
    )
    schedule_tick: float = field(
        default=1.0,
        metadata=_d(
            "STREAMS_SCHEDULE_TICK",
            SCHED,
            "how often every worker looks for due schedule slots, seconds",
            number(float),
            low=0.05,
        ),
    )
    schedule_catch_up: str = field(
        default="once",
        metadata=_d(
            "STREAMS_SCHEDULE_CATCH_UP",
            SCHED,
            "slots missed while every worker was down: `once` (one run), `skip` or `all` "
            "(for schedules that do not set their own)",
            catch_up,
        ),
    )
    schedule_grace: float = field(
        default=60.0,
        metadata=_d(
            "STREAMS_SCHEDULE_GRACE",
            SCHED,
            "a slot later than this when first seen counts as missed, seconds (for "
            "schedules that do not set their own; at most one interval)",
            number(float),
            low=0.0,
        ),
    )
    weekly_reports_schedule: str = field(
        default="0 9 * * 1",
        metadata=_d(
            "STREAMS_WEEKLY_REPORTS_SCHEDULE",
            SCHED,
            "when weekly reports go out: a crontab (UTC) or `every <n>s|m|h|d`; a run "
            "reports the 7 days before its slot",
            schedule_spec,
        ),
    )
    smtp_url: Secret = field(
        default_factory=lambda: Secret("smtp://127.0.0.1:25"),
        metadata=_d(
            "STREAMS_SMTP_URL",
            SCHED,
            "mail server: `smtp://[user:password@]host[:port]` (`?starttls=1`) or `smtps://`",
            smtp_url,
            shown="`smtp://127.0.0.1:25`",
        ),
    )
    smtp_sender: str = field(
        default="streams@localhost",
        metadata=_d("STREAMS_SMTP_SENDER", SCHED, "`From:` of reports and notifications", text),
    )
    smtp_timeout: float = field(
        default=30.0,
        metadata=_d(
            "STREAMS_SMTP_TIMEOUT",
            SCHED,
            "SMTP connect and command timeout, seconds",
            number(float),
            low=0.1,
        ),
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Validate the environment once; raises ``ConfigurationError`` naming the variable.

        Only the environment counts: no file in the working directory supplies a value.
        """
        env = os.environ if env is None else env
        for retired, why in RETIRED.items():
            if env.get(retired, "") != "":
                raise ConfigurationError(f"{retired} is no longer read: {why}")
        values = {f.name: read(f.name, env) for f in fields(cls)}
        values = {k: v for k, v in values.items() if v is not MISSING}
        settings = cls(**values)
        _check_agents(settings)
        return settings

    def to_env(self) -> dict[str, str]:
        """The environment that makes ``from_env`` return these settings (secrets included:
        this is for child processes, never for printing)."""
        return {decl.env: decl.parser.render(getattr(self, f.name)) for f, decl in declared()}

    def with_(self, **changes: Any) -> Settings:
        """A copy with some values changed (tests and the CLI use this)."""
        return replace(self, **changes)

    def unless_set(self, env: Mapping[str, str], **defaults: Any) -> Settings:
        """A copy with ``defaults`` for the fields whose variable ``env`` leaves unset
        (``streams up``'s values for the embedded stack: the environment wins)."""
        unset = {k: v for k, v in defaults.items() if not env.get(declaration(k).env)}
        return replace(self, **unset)


def declared() -> list[tuple[Field[Any], Declaration]]:
    """Every field of ``Settings`` with its declaration, in declaration order."""
    return [(f, f.metadata["setting"]) for f in fields(Settings)]


def declaration(name: str) -> Declaration:
    """The declaration of one ``Settings`` field."""
    for f, decl in declared():
        if f.name == name:
            return decl
    raise KeyError(name)


def default(name: str) -> Any:
    """The default value of one ``Settings`` field (``MISSING`` when it has none)."""
    for f, _ in declared():
        if f.name == name:
            return f.default_factory() if f.default_factory is not MISSING else f.default
    raise KeyError(name)


def read(name: str, env: Mapping[str, str] | None = None) -> Any:
    """One field's value from the environment (its default when unset or empty); for
    commands that start before the whole of ``Settings`` can be validated."""
    env = os.environ if env is None else env
    decl = declaration(name)
    raw = env.get(decl.env, "")
    if raw == "":
        if decl.required:
            raise ConfigurationError(f"{decl.env} is not set ({decl.required})")
        return default(name)
    return decl.load(raw)


def help_default(name: str) -> str:
    """``--help`` text for an option that defaults to a setting: its variable and default."""
    decl = declaration(name)
    return f"default: ${decl.env}, else {decl.shown_default(default(name))}"


def _check_agents(settings: Settings) -> None:
    """``STREAMS_AGENTS`` names built-in agents, or extension modules named alongside."""
    if settings.agents is None:
        return
    known = (*AGENT_NAMES, *(m.rsplit(".", 1)[-1] for m in settings.agent_modules))
    unknown = [a for a in settings.agents if a not in known]
    if unknown:
        raise ConfigurationError(
            f"STREAMS_AGENTS names unknown agents {', '.join(unknown)}; "
            f"known: {', '.join(known)} (or none)"
        )


def markdown_table() -> str:
    """The README's configuration table, one section per component group."""
    rows: list[str] = []
    for group in Group:
        decls = [(f, d) for f, d in declared() if d.group is group]
        if not decls:
            continue
        rows += [
            "",
            f"**{group.value}**",
            "",
            "| variable | default | meaning |",
            "| --- | --- | --- |",
        ]
        for f, decl in decls:
            shown = "required" if decl.required else decl.shown_default(default(f.name))
            doc = decl.doc.replace("|", "\\|")  # a bar would end the table cell
            rows.append(f"| `{decl.env}` | {shown} | {doc}{decl.bounds_text()} |")
    return "\n".join(rows).strip() + "\n"


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
