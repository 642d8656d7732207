"""Every metric streams exports, declared in one place, on one dedicated registry.

Metric names are a ``Literal`` so that a typo fails type-checking; dashboards and
alert rules are tested against a live scrape of these names.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

MetricName = Literal[
    "streams_publish_seconds",
    "streams_published_total",
    "streams_publish_errors_total",
    "streams_agent_duration_seconds",
    "streams_agent_memory_delta_bytes",
    "streams_agent_messages_total",
    "streams_agent_retries_total",
    "streams_agent_in_flight",
    "streams_dead_letters_total",
    "streams_invalidation_scheduled_total",
    "streams_invalidation_skipped_total",
    "streams_invalidation_recomputes_total",
    "streams_invalidation_windows_folded_total",
    "streams_invalidation_deferred_total",
    "streams_invalidation_recompute_failures_total",
    "streams_invalidation_pending",
    "streams_invalidation_lateness_seconds",
    "streams_project_configs_published_total",
    "streams_project_configs_served_total",
    "streams_project_configs_unservable_total",
    "streams_project_configs_served_keys",
    "streams_relay_rows_published_total",
    "streams_relay_rows_coalesced_total",
    "streams_relay_rows_dead_lettered_total",
    "streams_relay_shards_rescheduled_total",
    "streams_relay_oldest_pending_seconds",
    "streams_relay_max_shard_depth",
    "streams_relay_queued_rows",
    "streams_relay_batch_seconds",
    "streams_backfill_lower_bound",
    "streams_backfill_batches_total",
    "streams_backfill_rows_total",
    "streams_resource_changes_total",
    "streams_webhook_deliveries_requested_total",
    "streams_service_hook_refused_total",
    "streams_webhook_requests_total",
    "streams_webhook_request_seconds",
    "streams_webhook_deliveries_total",
    "streams_webhook_delivery_latency_seconds",
    "streams_webhook_circuit_open",
    "streams_webhook_circuit_transitions_total",
    "streams_lag_polls_total",
    "streams_lag_poll_seconds",
    "streams_lag_broker_up",
    "streams_lag_last_success_timestamp_seconds",
    "streams_lag_probe_misses_total",
    "streams_buffer_increments_total",
    "streams_buffer_replayed_total",
    "streams_buffer_rows_flushed_total",
    "streams_buffer_statements_total",
    "streams_buffer_flushes_total",
    "streams_buffer_flush_seconds",
    "streams_buffer_pending_rows",
    "streams_buffer_held_messages",
    "streams_offset_mark_resets_total",
    "streams_commit_outcomes_resolved_total",
    "streams_schedule_runs_total",
    "streams_schedule_failures_total",
    "streams_schedule_run_seconds",
    "streams_schedule_last_success_timestamp_seconds",
    "streams_schedule_next_run_timestamp_seconds",
    "streams_mail_sent_total",
    "streams_mail_send_seconds",
    "streams_reports_total",
    "streams_notifications_total",
    "streams_delayed_delivered_total",
    "streams_delayed_lateness_seconds",
    "streams_delayed_publish_errors_total",
    "streams_delayed_pending",
    "streams_jobs_runs_total",
    "streams_faust_drains_total",
    "streams_consumer_errors_total",
    "streams_consumer_gaps_total",
    "streams_consumer_handoffs_total",
]

_LATENCY_BUCKETS = (
    0.0001,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


def counter(name: MetricName, doc: str, labels: tuple[str, ...] = ()) -> Counter:
    return Counter(name.removesuffix("_total"), doc, labels, registry=REGISTRY)


def gauge(name: MetricName, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
    return Gauge(name, doc, labels, registry=REGISTRY)


def histogram(
    name: MetricName,
    doc: str,
    labels: tuple[str, ...] = (),
    buckets: tuple[float, ...] = _LATENCY_BUCKETS,
) -> Histogram:
    return Histogram(name, doc, labels, buckets=buckets, registry=REGISTRY)


def observe_many(histogram: Histogram, amounts: Iterable[float]) -> None:
    """``histogram.observe(a)`` for every finite ``a``, with one increment per bucket
    touched instead of a locked increment per amount (the invalidation timer observes a
    lateness per countdown window: about 4,000 a second at 100k projects). Relies on
    prometheus-client's histogram internals, checked by tests/test_metrics.py; without
    them it observes one by one."""
    child: Any = histogram
    bounds, buckets, total = (
        getattr(child, "_upper_bounds", None),
        getattr(child, "_buckets", None),
        getattr(child, "_sum", None),
    )
    if bounds is None or buckets is None or total is None:
        for amount in amounts:
            histogram.observe(amount)
        return
    child._raise_if_not_observable()
    counts = [0] * len(bounds)
    added = 0.0
    last = len(bounds) - 1
    for amount in amounts:
        counts[min(bisect_left(bounds, amount), last)] += 1
        added += amount
    total.inc(added)
    for i, n in enumerate(counts):
        if n:
            buckets[i].inc(n)


PUBLISH_SECONDS = histogram(
    "streams_publish_seconds",
    "Time to check, encode and hand a message to the producer.",
    ("topic",),
)
PUBLISHED = counter("streams_published_total", "Messages acknowledged by the broker.", ("topic",))
PUBLISH_ERRORS = counter(
    "streams_publish_errors_total",
    "Messages refused (schema) or not acknowledged.",
    ("topic", "reason"),
)
AGENT_DURATION = histogram(
    "streams_agent_duration_seconds", "Handler time per message.", ("agent",)
)
AGENT_MEMORY = histogram(
    "streams_agent_memory_delta_bytes",
    "Resident memory growth across one handler call (sampled).",
    ("agent",),
    buckets=(0, 4096, 65536, 1 << 20, 16 << 20, 128 << 20),
)
AGENT_MESSAGES = counter(
    "streams_agent_messages_total", "Messages handled, by outcome.", ("agent", "outcome")
)
AGENT_RETRIES = counter("streams_agent_retries_total", "Handler retries.", ("agent",))
AGENT_IN_FLIGHT = gauge("streams_agent_in_flight", "Messages being handled now.", ("agent",))
DEAD_LETTERS = counter(
    "streams_dead_letters_total", "Messages sent to the dead-letter topic.", ("source", "reason")
)
