"""The settings every process shares: Kafka, the database, the worker process, logging.

Declared here, combined into ``streams.settings.Settings``; see that module for how
declarations are read, rendered and documented."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from streams.settings_parse import (
    AGENT_NAMES,
    DB,
    KAFKA,
    LOG,
    PORT,
    PROC,
    Secret,
    agents,
    declare,
    flag,
    gc_thresholds,
    level,
    log_format,
    name_list,
    number,
    optional_number,
    optional_text,
    path,
    prefix,
    secret,
    silo,
    text,
)
from streams.silo import SiloMode


@dataclass(frozen=True, kw_only=True)
class CoreSettings:
    """Kafka, database, process and logging fields of ``Settings``."""

    kafka_bootstrap_servers: str = field(
        metadata=declare(
            "KAFKA_BOOTSTRAP_SERVERS",
            KAFKA,
            "broker addresses; when set, `streams up` starts no embedded broker",
            text,
            required="export it (`streams dev start` prints the line), or run `streams up`",
        )
    )
    database_url: Secret = field(
        metadata=declare(
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
        metadata=declare(
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
        metadata=declare(
            "SCHEMA_REGISTRY_URL",
            KAFKA,
            "write Confluent Schema Registry framing (subjects `<topic>-value`); both "
            "framings are always read",
            optional_text,
        ),
    )
    silo_mode: SiloMode = field(
        default=SiloMode.MONOLITH,
        metadata=declare(
            "STREAMS_SILO_MODE",
            PROC,
            "`region`, `control` or `monolith`: which agents run and which topics may be "
            "published to",
            silo,
        ),
    )
    topic_prefix: str = field(
        default="",
        metadata=declare(
            "STREAMS_TOPIC_PREFIX",
            KAFKA,
            "prepended to every topic name (multi-tenant clusters, test isolation)",
            prefix,
        ),
    )
    app_id: str = field(
        default="streams",
        metadata=declare(
            "STREAMS_APP_ID", PROC, "Faust app id = consumer group of the worker", text
        ),
    )
    producer_name: str = field(
        default_factory=socket.gethostname,
        metadata=declare(
            "STREAMS_PRODUCER_NAME",
            KAFKA,
            "`streams-producer` header and client id",
            text,
            shown="hostname",
        ),
    )
    web_host: str = field(
        default="127.0.0.1",
        metadata=declare("STREAMS_WEB_HOST", PROC, "bind address of the worker web server", text),
    )
    web_port: int = field(
        default=6066,
        metadata=declare(
            "STREAMS_WEB_PORT",
            PROC,
            "worker web server (`/metrics`, `/health`, config API)",
            number(int),
            **PORT,
        ),
    )
    console_token: Secret = field(
        default_factory=lambda: Secret(""),
        metadata=declare(
            "STREAMS_CONSOLE_TOKEN",
            PROC,
            "token the web console (`/console`) asks for; empty: none (bind address only)",
            secret,
        ),
    )
    state_dir: Path = field(
        default_factory=lambda: Path(".streams").absolute(),
        metadata=declare(
            "STREAMS_STATE_DIR",
            PROC,
            "embedded stack data, logs, Faust data",
            path,
            shown="`.streams` (absolute)",
        ),
    )
    log_level: str = field(
        default="INFO",
        metadata=declare(
            "STREAMS_LOG_LEVEL", LOG, "log level (`streams up` prints WARNING and up)", level
        ),
    )
    log_format: str = field(
        default="text",
        metadata=declare(
            "STREAMS_LOG_FORMAT",
            LOG,
            "`text` (event name, then `key=value` fields) or `json` (one object a line)",
            log_format,
        ),
    )
    kafka_session_timeout: float = field(
        default=10.0,
        metadata=declare(
            "STREAMS_KAFKA_SESSION_TIMEOUT",
            KAFKA,
            "consumer group session, seconds; `up` and tests use 6 (Tansu joins take session / 2)",
            number(float),
            low=1.0,
        ),
    )
    kafka_heartbeat_interval: float = field(
        default=3.0,
        metadata=declare(
            "STREAMS_KAFKA_HEARTBEAT_INTERVAL",
            KAFKA,
            "consumer heartbeat, seconds; `up` and tests use 1",
            number(float),
            low=0.1,
        ),
    )
    replication_factor: int = field(
        default=1,
        metadata=declare(
            "STREAMS_REPLICATION_FACTOR",
            KAFKA,
            "for topics created by `streams topics create`",
            number(int),
            low=1,
        ),
    )
    table_store: str = field(
        default="memory://",
        metadata=declare(
            "STREAMS_TABLE_STORE", PROC, "Faust table store (`rocksdb://` in production)", text
        ),
    )
    agent_modules: tuple[str, ...] = field(
        default=(),
        metadata=declare(
            "STREAMS_AGENT_MODULES",
            PROC,
            "extra modules with `install(app, runtime)` (your own agents and topics)",
            name_list,
        ),
    )
    job_modules: tuple[str, ...] = field(
        default=(),
        metadata=declare(
            "STREAMS_JOB_MODULES",
            PROC,
            "modules declaring jobs (`streams.jobs.declare.job`) that the jobs agent runs",
            name_list,
        ),
    )
    agents: tuple[str, ...] | None = field(
        default=None,
        metadata=declare(
            "STREAMS_AGENTS",
            PROC,
            "agents this worker runs, by name (" + ", ".join(AGENT_NAMES) + ", or the last "
            "part of a `STREAMS_AGENT_MODULES` module); `none`; unset = all",
            agents,
        ),
    )
    consumer_fetch_max_wait: float | None = field(
        default=None,
        metadata=declare(
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
        metadata=declare(
            "STREAMS_CONSUMER_FAST_DRAIN",
            PROC,
            "Faust's consumer hands records to streams without four tasks per record "
            "(`streams/faust_drain.py`, relies on faust-streaming 0.15 internals); `0` = "
            "Faust's own loop",
            flag,
        ),
    )
    gc_thresholds: tuple[int, int, int] | None = field(
        default=(50_000, 20, 50),
        metadata=declare(
            "STREAMS_GC_THRESHOLDS",
            PROC,
            "Python's garbage collector in workers and the relay (`gc.set_threshold`): "
            "allocations between young collections, then how many of each generation's "
            "collections before the next one's; `python` = Python's (700,10,10), under which "
            "a worker at 100k projects spent a fifth of its CPU collecting (bench/README.md)",
            gc_thresholds,
        ),
    )
    direct_consumers: bool = field(
        default=True,
        metadata=declare(
            "STREAMS_DIRECT_CONSUMERS",
            PROC,
            "agents without a Faust table (resource changes, webhook deliveries and retries, "
            "invalidation requests: its due table is then kept by streams; the served-configs "
            "feed, following Faust's assignment of its table) read their topic through a "
            "librdkafka consumer, one group per agent (`<app id>.<agent>`), committing once "
            "per handled batch; `0` = through Faust",
            flag,
        ),
    )
