"""The settings of one component each: relay, webhooks, config invalidation, buffers,
backfill, lag exporter, schedules and mail.

Declared here, combined into ``streams.settings.Settings``."""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.settings_parse import (
    BACKFILL,
    BUFFERS,
    CONFIGS,
    HOOKS,
    LAG,
    PORT_OR_OFF,
    RELAY,
    SCHED,
    Secret,
    catch_up,
    declare,
    flag,
    name_list,
    number,
    regex,
    schedule_spec,
    smtp_url,
    text,
)


@dataclass(frozen=True, kw_only=True)
class ComponentSettings:
    """Per-component fields of ``Settings``."""

    relay_concurrency: int = field(
        default=1,
        metadata=declare(
            "STREAMS_RELAY_CONCURRENCY",
            RELAY,
            "worker processes per relay (each drains a set of shards with its own producer and "
            "connections); 1 drains in the relay process",
            number(int),
            low=1,
        ),
    )
    relay_poll_interval: float = field(
        default=1.0,
        metadata=declare(
            "STREAMS_RELAY_POLL_INTERVAL",
            RELAY,
            "fallback poll when no NOTIFY arrives, seconds",
            number(float),
            low=0.01,
        ),
    )
    relay_batch_size: int = field(
        default=5_000,  # amortises the per-batch ack wait and round trips
        metadata=declare(
            "STREAMS_RELAY_BATCH_SIZE", RELAY, "rows per claim transaction", number(int), low=1
        ),
    )
    relay_linger: float = field(
        # librdkafka's linger for outbox messages. A batch is flushed once produced, and
        # a flush sends at once whatever the linger: the linger only gathers the
        # messages produced meanwhile into fewer, larger requests (bench/README.md).
        default=0.02,
        metadata=declare(
            "STREAMS_RELAY_LINGER",
            RELAY,
            "seconds the relay's producer gathers outbox messages before sending (a batch's "
            "flush sends at once)",
            number(float),
            low=0.0,
            high=10.0,
        ),
    )
    relay_publish_timeout: float = field(
        default=30.0,
        metadata=declare(
            "STREAMS_RELAY_PUBLISH_TIMEOUT",
            RELAY,
            "per-message broker timeout of the relay, seconds",
            number(float),
            low=1.0,
        ),
    )
    metrics_port: int = field(
        default=9300,
        metadata=declare(
            "STREAMS_METRICS_PORT", RELAY, "relay `/metrics` (0 = off)", number(int), **PORT_OR_OFF
        ),
    )
    ssrf_allow: tuple[str, ...] = field(
        default=(),
        metadata=declare(
            "STREAMS_WEBHOOK_ALLOW_HOSTS",
            HOOKS,
            "hosts/addresses exempt from the SSRF guard (tests: `127.0.0.1`)",
            name_list,
        ),
    )
    webhook_timeout: float = field(
        default=10.0,
        metadata=declare(
            "STREAMS_WEBHOOK_TIMEOUT",
            HOOKS,
            "HTTP timeout per delivery attempt, seconds",
            number(float),
            low=0.1,
        ),
    )
    webhook_max_retries: int = field(
        default=5,
        metadata=declare(
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
        metadata=declare(
            "STREAMS_WEBHOOK_RETRY_DELAY",
            HOOKS,
            "delay between attempts, seconds",
            number(float),
            low=0.0,
        ),
    )
    resource_change_retries: int = field(
        default=5,
        metadata=declare(
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
        metadata=declare(
            "STREAMS_RESOURCE_CHANGE_RETRY_DELAY",
            HOOKS,
            "delay between those retries, seconds (sent by the relay's pump)",
            number(float),
            low=0.0,
        ),
    )
    webhook_breaker_threshold: int = field(
        default=10,
        metadata=declare(
            "STREAMS_WEBHOOK_BREAKER_THRESHOLD",
            HOOKS,
            "consecutive failures that open a target's circuit",
            number(int),
            low=1,
        ),
    )
    webhook_breaker_pause: float = field(
        default=60.0,
        metadata=declare(
            "STREAMS_WEBHOOK_BREAKER_PAUSE",
            HOOKS,
            "how long an open circuit stays open, seconds",
            number(float),
            low=0.0,
        ),
    )
    webhook_handoff: bool = field(
        default=True,
        metadata=declare(
            "STREAMS_WEBHOOK_HANDOFF",
            HOOKS,
            "a worker running both `resource_changes` and `webhook_delivery` attempts the "
            "deliveries it published at once when its own `webhook_delivery` consumer owns "
            "their partition, instead of reading them back from the topic "
            "(`streams/agents/wrapper/handoff.py`); `0` = always through the topic",
            flag,
        ),
    )
    invalidation_countdown: float = field(
        default=5.0,
        metadata=declare(
            "STREAMS_INVALIDATION_COUNTDOWN",
            CONFIGS,
            "countdown of the invalidations `streams up`'s demo and the benchmark send, "
            "seconds (callers pass `countdown=`, default 5)",
            number(float),
            low=0.0,
        ),
    )
    buffer_flush_interval: float = field(
        default=5.0,
        metadata=declare(
            "STREAMS_BUFFER_FLUSH_INTERVAL",
            BUFFERS,
            "buffered-increment flush window, seconds",
            number(float),
            low=0.05,
        ),
    )
    backfill_max_rate: int = field(
        default=10_000,
        metadata=declare(
            "STREAMS_BACKFILL_MAX_RATE",
            BACKFILL,
            "backfill rows per minute, minus regular outbox rows (0 = no limit)",
            number(int),
            low=0,
        ),
    )
    backfill_batch_size: int = field(
        default=1_000,
        metadata=declare(
            "STREAMS_BACKFILL_BATCH_SIZE", BACKFILL, "ids per backfill batch", number(int), low=1
        ),
    )
    backfill_interval: float = field(
        default=60.0,
        metadata=declare(
            "STREAMS_BACKFILL_INTERVAL",
            BACKFILL,
            "backfill scheduler timer, seconds",
            number(float),
            low=0.05,
        ),
    )
    region_names: tuple[str, ...] = field(
        default=("default",),
        metadata=declare(
            "STREAMS_REGION_NAMES",
            BACKFILL,
            "regions that control-silo backfill rows fan out to",
            name_list,
        ),
    )
    lag_exporter_port: int = field(
        default=9308,
        metadata=declare(
            "STREAMS_LAG_EXPORTER_PORT",
            LAG,
            "lag exporter HTTP port (0 = any free port)",
            number(int),
            **PORT_OR_OFF,
        ),
    )
    lag_exporter_interval: float = field(
        default=5.0,
        metadata=declare(
            "STREAMS_LAG_EXPORTER_INTERVAL",
            LAG,
            "seconds between polls of the cluster",
            number(float),
            low=0.1,
        ),
    )
    lag_exporter_groups: str = field(
        default=".*",
        metadata=declare(
            "STREAMS_LAG_EXPORTER_GROUPS", LAG, "only consumer groups matching this regex", regex
        ),
    )
    lag_exporter_cluster: str = field(
        default="local",
        metadata=declare(
            "STREAMS_LAG_EXPORTER_CLUSTER", LAG, "value of the `cluster_name` label", text
        ),
    )
    schedule_tick: float = field(
        default=1.0,
        metadata=declare(
            "STREAMS_SCHEDULE_TICK",
            SCHED,
            "how often every worker looks for due schedule slots, seconds",
            number(float),
            low=0.05,
        ),
    )
    schedule_catch_up: str = field(
        default="once",
        metadata=declare(
            "STREAMS_SCHEDULE_CATCH_UP",
            SCHED,
            "slots missed while every worker was down: `once` (one run), `skip` or `all` "
            "(for schedules that do not set their own)",
            catch_up,
        ),
    )
    schedule_grace: float = field(
        default=60.0,
        metadata=declare(
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
        metadata=declare(
            "STREAMS_WEEKLY_REPORTS_SCHEDULE",
            SCHED,
            "when weekly reports go out: a crontab (UTC) or `every <n>s|m|h|d`; a run "
            "reports the 7 days before its slot",
            schedule_spec,
        ),
    )
    smtp_url: Secret = field(
        default_factory=lambda: Secret("smtp://127.0.0.1:25"),
        metadata=declare(
            "STREAMS_SMTP_URL",
            SCHED,
            "mail server: `smtp://[user:password@]host[:port]` (`?starttls=1`) or `smtps://`",
            smtp_url,
            shown="`smtp://127.0.0.1:25`",
        ),
    )
    smtp_sender: str = field(
        default="streams@localhost",
        metadata=declare(
            "STREAMS_SMTP_SENDER", SCHED, "`From:` of reports and notifications", text
        ),
    )
    smtp_timeout: float = field(
        default=30.0,
        metadata=declare(
            "STREAMS_SMTP_TIMEOUT",
            SCHED,
            "SMTP connect and command timeout, seconds",
            number(float),
            low=0.1,
        ),
    )
