"""Grafana dashboards, defined once as data (rendered by ``streams.ops.grafana``).

Two dashboards: consumer lag (from ``streams lag-exporter``) and the pipeline (agents,
dead letters, publishing, relay, debounce, buffers, webhooks). Every query names only
metrics the project exports; ``tests/ops`` checks that against a live scrape.
"""

from __future__ import annotations

from streams.ops.grafana import RATE, Dashboard, Panel, Query, Row, Variable, quantiles

G = 'group=~"$group"'

LAG = Dashboard(
    uid="streams-lag",
    title="streams / consumer lag",
    description="Consumer-group lag in messages and seconds, from streams lag-exporter.",
    variables=(Variable("group", "kafka_consumergroup_group_sum_lag", "Consumer group"),),
    rows=(
        Row(
            "Lag",
            (
                Panel(
                    "Time lag by group (age of the oldest unconsumed message)",
                    (
                        Query(
                            f"max by (group) (kafka_consumergroup_group_max_lag_seconds{{{G}}})",
                            "{{group}}",
                        ),
                    ),
                    unit="s",
                ),
                Panel(
                    "Offset lag by group",
                    (
                        Query(
                            f"sum by (group) (kafka_consumergroup_group_sum_lag{{{G}}})",
                            "{{group}}",
                        ),
                    ),
                ),
                Panel(
                    "Top 10 groups by time lag",
                    (
                        Query(
                            "topk(10, max by (group) (kafka_consumergroup_group_max_lag_seconds))",
                            "{{group}}",
                            instant=True,
                        ),
                    ),
                    unit="s",
                    kind="bargauge",
                ),
                Panel(
                    "Top 10 groups by offset lag",
                    (
                        Query(
                            "topk(10, sum by (group) (kafka_consumergroup_group_sum_lag))",
                            "{{group}}",
                            instant=True,
                        ),
                    ),
                    kind="bargauge",
                ),
                Panel(
                    "Offset lag by group and topic",
                    (
                        Query(
                            "sum by (group, topic) "
                            f"(kafka_consumergroup_group_topic_sum_lag{{{G}}})",
                            "{{group}} {{topic}}",
                        ),
                    ),
                ),
                Panel(
                    "Largest partition lag by group and topic",
                    (
                        Query(
                            f"max by (group, topic) (kafka_consumergroup_group_lag{{{G}}})",
                            "{{group}} {{topic}}",
                        ),
                    ),
                ),
            ),
        ),
        Row(
            "Rates",
            (
                Panel(
                    "Produced messages/s by topic",
                    (
                        Query(
                            f"sum by (topic) (rate(kafka_partition_latest_offset[{RATE}]))",
                            "{{topic}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Committed messages/s by group",
                    (
                        Query(
                            "sum by (group) "
                            f"(rate(kafka_consumergroup_group_offset{{{G}}}[{RATE}]))",
                            "{{group}}",
                        ),
                    ),
                    unit="ops",
                ),
            ),
        ),
        Row(
            "Groups and exporter",
            (
                Panel(
                    "Group state and members",
                    (
                        Query(
                            f"max by (group, state) (kafka_consumergroup_group_state{{{G}}}) == 1",
                            "{{group}} {{state}}",
                            instant=True,
                        ),
                        Query(
                            f"max by (group) (kafka_consumergroup_members{{{G}}})",
                            "{{group}} members",
                            instant=True,
                        ),
                    ),
                    kind="table",
                ),
                Panel(
                    "Exporter: broker reachable, poll time",
                    (
                        Query("max(streams_lag_broker_up)", "broker up"),
                        Query("max(kafka_consumergroup_poll_time_ms) / 1000", "last poll (s)"),
                        Query(
                            "histogram_quantile(0.99, sum by (le) "
                            f"(rate(streams_lag_poll_seconds_bucket[{RATE}])))",
                            "p99 poll (s)",
                        ),
                        Query(
                            f'sum(rate(streams_lag_polls_total{{outcome="failure"}}[{RATE}]))',
                            "failed polls/s",
                        ),
                    ),
                ),
            ),
        ),
    ),
)

A = 'agent=~"$agent"'

PIPELINE = Dashboard(
    uid="streams-pipeline",
    title="streams / pipeline",
    description="Agents, dead letters, publishing, outbox relay, debounce, buffers, webhooks.",
    variables=(Variable("agent", "streams_agent_messages_total", "Agent"),),
    rows=(
        Row(
            "Agents",
            (
                Panel(
                    "Throughput by agent (messages/s)",
                    (
                        Query(
                            "sum by (agent, outcome) "
                            f"(rate(streams_agent_messages_total{{{A}}}[{RATE}]))",
                            "{{agent}} {{outcome}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Failures and retries by agent (/s)",
                    (
                        Query(
                            "sum by (agent) (rate(streams_agent_messages_total"
                            f'{{{A}, outcome="failure"}}[{RATE}]))',
                            "{{agent}} failed",
                        ),
                        Query(
                            f"sum by (agent) (rate(streams_agent_retries_total{{{A}}}[{RATE}]))",
                            "{{agent}} retried",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Handler duration percentiles",
                    quantiles("streams_agent_duration_seconds", "agent"),
                    unit="s",
                ),
                Panel(
                    "In flight and memory growth p99",
                    (
                        Query(f"sum by (agent) (streams_agent_in_flight{{{A}}})", "{{agent}}"),
                        Query(
                            "histogram_quantile(0.99, sum by (le, agent) "
                            f"(rate(streams_agent_memory_delta_bytes_bucket[{RATE}])))",
                            "{{agent}} memory p99 (bytes)",
                        ),
                    ),
                ),
            ),
        ),
        Row(
            "Dead letters and publishing",
            (
                Panel(
                    "Dead letters/s by source and reason",
                    (
                        Query(
                            f"sum by (source, reason) (rate(streams_dead_letters_total[{RATE}]))",
                            "{{source}} {{reason}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Published and refused messages/s by topic",
                    (
                        Query(
                            f"sum by (topic) (rate(streams_published_total[{RATE}]))",
                            "{{topic}}",
                        ),
                        Query(
                            f"sum by (topic, reason) (rate(streams_publish_errors_total[{RATE}]))",
                            "{{topic}} refused: {{reason}}",
                        ),
                    ),
                    unit="ops",
                ),
            ),
        ),
        Row(
            "Outbox relay",
            (
                Panel(
                    "Oldest outbox row age",
                    (Query("max by (table) (streams_relay_oldest_pending_seconds)", "{{table}}"),),
                    unit="s",
                ),
                Panel(
                    "Queued outbox rows",
                    (
                        Query("sum by (table) (streams_relay_queued_rows)", "{{table}}"),
                        Query(
                            "max by (table) (streams_relay_max_shard_depth)",
                            "{{table}} deepest shard",
                        ),
                    ),
                ),
                Panel(
                    "Relay rows/s",
                    (
                        Query(
                            f"sum by (table) (rate(streams_relay_rows_published_total[{RATE}]))",
                            "{{table}} published",
                        ),
                        Query(
                            f"sum by (table) (rate(streams_relay_rows_coalesced_total[{RATE}]))",
                            "{{table}} coalesced",
                        ),
                        Query(
                            "sum by (table) "
                            f"(rate(streams_relay_rows_dead_lettered_total[{RATE}]))",
                            "{{table}} dead-lettered",
                        ),
                        Query(
                            "sum by (table) "
                            f"(rate(streams_relay_shards_rescheduled_total[{RATE}]))",
                            "{{table}} shards rescheduled",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Relay transaction duration",
                    quantiles("streams_relay_batch_seconds", "table"),
                    unit="s",
                ),
            ),
        ),
        Row(
            "Project config invalidation (debounce)",
            (
                Panel(
                    "Invalidations scheduled vs skipped (/s)",
                    (
                        Query(
                            f"sum by (reason) (rate(streams_invalidation_scheduled_total[{RATE}]))",
                            "scheduled {{reason}}",
                        ),
                        Query(
                            f"sum by (reason) (rate(streams_invalidation_skipped_total[{RATE}]))",
                            "skipped {{reason}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Pending recomputes and lateness p99",
                    (
                        Query("sum(streams_invalidation_pending)", "pending"),
                        Query(
                            "histogram_quantile(0.99, sum by (le) "
                            f"(rate(streams_invalidation_lateness_seconds_bucket[{RATE}])))",
                            "lateness p99 (s)",
                        ),
                    ),
                ),
            ),
        ),
        Row(
            "Buffered increments",
            (
                Panel(
                    "Flush statements vs increments (/s)",
                    (
                        Query(
                            f"sum by (kind) (rate(streams_buffer_statements_total[{RATE}]))",
                            "statements {{kind}}",
                        ),
                        Query(f"sum(rate(streams_buffer_increments_total[{RATE}]))", "increments"),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Flushes and pending rows",
                    (
                        Query(
                            f"sum by (outcome) (rate(streams_buffer_flushes_total[{RATE}]))",
                            "flushes {{outcome}}",
                        ),
                        Query("sum(streams_buffer_pending_rows)", "pending rows"),
                    ),
                ),
            ),
        ),
        Row(
            "Webhooks",
            (
                Panel(
                    "Deliveries by verdict (/s)",
                    (
                        Query(
                            "sum by (kind, verdict) "
                            f"(rate(streams_webhook_deliveries_total[{RATE}]))",
                            "{{kind}} {{verdict}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Request duration and open circuits",
                    (
                        *quantiles("streams_webhook_request_seconds", "kind"),
                        Query("sum(streams_webhook_circuit_open)", "open circuits"),
                    ),
                    unit="s",
                ),
            ),
        ),
    ),
)

DASHBOARDS = (LAG, PIPELINE)
