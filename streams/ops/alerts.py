"""Alert rules, defined once and rendered as a Prometheus rules file and a PrometheusRule.

Thresholds and ``for`` durations are parameters so the live-Prometheus test can run
the very same expressions with seconds instead of minutes. Job names are the ones the
PodMonitors in ``k8s/base`` give (``streams-worker``, ``streams-relay``,
``streams-lag-exporter``); workers also carry a ``silo`` label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

WORKER_JOB = "streams-worker"
RELAY_JOB = "streams-relay"
EXPORTER_JOB = "streams-lag-exporter"
GROUP_NAME = "streams"


@dataclass(frozen=True)
class AlertParams:
    lag_seconds: float = 300.0
    lag_for: str = "5m"
    dead_letters_window: str = "10m"
    dead_letters_for: str = "1m"
    relay_backlog_seconds: float = 300.0
    relay_backlog_for: str = "5m"
    absent_for: str = "2m"
    target_down_for: str = "5m"
    broker_down_for: str = "5m"
    schedule_missed_seconds: float = 600.0
    schedule_missed_for: str = "5m"
    # Silos that run workers and relays; per silo an alert fires when none of them is up.
    silos: tuple[str, ...] = ("region", "control")


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    duration: str
    severity: str
    summary: str
    description: str
    labels: dict[str, str] = field(default_factory=dict)

    def rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.duration,
            "labels": {"severity": self.severity, **self.labels},
            "annotations": {"summary": self.summary, "description": self.description},
        }


def _num(value: float) -> str:
    return f"{value:g}"


def alerts(p: AlertParams | None = None) -> list[Alert]:
    """Every streams alert, with ``p``'s thresholds."""
    p = p or AlertParams()
    found = [
        Alert(
            "StreamsConsumerLagHigh",
            "max by (cluster_name, group) (kafka_consumergroup_group_max_lag_seconds)"
            f" > {_num(p.lag_seconds)}",
            p.lag_for,
            "warning",
            "Consumer group {{ $labels.group }} is {{ $value | humanizeDuration }} behind",
            "The oldest unconsumed message of group {{ $labels.group }} has waited more than "
            f"{_num(p.lag_seconds)}s for {p.lag_for}. Check the workers' throughput and failures "
            "(dashboard streams / pipeline) and the KEDA scaler.",
        ),
        Alert(
            "StreamsDeadLettersGrowing",
            "sum by (source, reason) "
            f"(increase(streams_dead_letters_total[{p.dead_letters_window}])) > 0",
            p.dead_letters_for,
            "warning",
            "Dead letters from {{ $labels.source }} ({{ $labels.reason }})",
            "{{ $value | humanize }} messages went to the dead-letter topic in the last "
            f"{p.dead_letters_window}. Inspect them with `streams dlq list`; replay with "
            "`streams dlq replay --topic ...` once fixed.",
        ),
        Alert(
            "StreamsOffsetMarkReset",
            "sum by (kind, topic) (increase(streams_offset_mark_resets_total[1h])) > 0",
            "0m",
            "critical",
            "Offset marks of {{ $labels.kind }} on {{ $labels.topic }} were beyond the log",
            "A mark kept in PostgreSQL pointed past its partition's end: the topic's log was "
            "replaced (broker restarted without its data, topic deleted and recreated). The "
            "marks were voided and the new log is applied from its start; messages of the old "
            "log that were never consumed are gone with it. Find out why the log was lost "
            "(worker logs: marks.reset.detected).",
        ),
        Alert(
            "StreamsConsumerGapAccepted",
            'sum by (agent) (increase(streams_consumer_gaps_total{outcome!="refetched"}[1h])) > 0',
            "0m",
            "critical",
            "Agent {{ $labels.agent }} stepped over offsets no fetch returned",
            "A consumer read a partition past offsets that held no record it was given: "
            "after re-reading for 2 s (outcome accepted; agent faust for Faust's consumers), "
            "or at once on a topic outside the catalogue (outcome unchecked). On streams' own "
            "topics records were skipped: find the range in the worker logs "
            "(consumer.gap.accepted, consumer.gap.unchecked) and re-publish it. Commit "
            "markers of a transactional producer upstream also cause it.",
        ),
        Alert(
            "StreamsRelayBacklogOld",
            "max by (table) (streams_relay_oldest_pending_seconds)"
            f" > {_num(p.relay_backlog_seconds)}",
            p.relay_backlog_for,
            "warning",
            "Outbox {{ $labels.table }}: oldest row waits {{ $value | humanizeDuration }}",
            "Rows of the outbox are not being published. Check the relay's logs and "
            "streams_relay_shards_rescheduled_total.",
        ),
        *(
            Alert(
                f"Streams{kind.capitalize()}Absent{silo.capitalize()}",
                f'absent(up{{job="{job}", silo="{silo}"}} == 1)',
                p.absent_for,
                "critical",
                f"No {silo} {kind} is up",
                f"No {kind} of silo {silo} has answered a scrape for {p.absent_for}: {harm}.",
                {"silo": silo},
            )
            for kind, job, harm in (
                ("worker", WORKER_JOB, "its agents are not running"),
                ("relay", RELAY_JOB, "its outbox rows are not published"),
            )
            for silo in p.silos
        ),
        Alert(
            "StreamsLagExporterAbsent",
            f'absent(up{{job="{EXPORTER_JOB}"}} == 1)',
            p.absent_for,
            "warning",
            "The lag exporter is down",
            "Without it StreamsConsumerLagHigh cannot fire.",
        ),
        Alert(
            "StreamsTargetDown",
            f'up{{job=~"{WORKER_JOB}|{RELAY_JOB}|{EXPORTER_JOB}"}} == 0',
            p.target_down_for,
            "warning",
            "{{ $labels.job }} {{ $labels.instance }} does not answer scrapes",
            "One pod of {{ $labels.job }} has been unreachable for " + p.target_down_for + ".",
        ),
        Alert(
            "StreamsLagExporterBrokerDown",
            "max(streams_lag_broker_up) == 0",
            p.broker_down_for,
            "critical",
            "The lag exporter cannot reach the Kafka cluster",
            "Polls of the cluster fail; lag values shown are the last good reading.",
        ),
        Alert(
            "StreamsScheduleMissed",
            "time() - max by (schedule) (streams_schedule_next_run_timestamp_seconds)"
            f" > {_num(p.schedule_missed_seconds)}",
            p.schedule_missed_for,
            "warning",
            "Schedule {{ $labels.schedule }} missed its run",
            "Its next slot is {{ $value | humanizeDuration }} overdue (more than "
            f"{_num(p.schedule_missed_seconds)}s). `streams schedules list` shows its last run "
            "and status; see streams_schedule_failures_total and the workers' logs "
            "(schedule.run.failed).",
        ),
    ]
    return found


def rule_groups(p: AlertParams | None = None, interval: str = "30s") -> dict[str, Any]:
    """The ``groups:`` document of a Prometheus rules file."""
    return {
        "groups": [
            {"name": GROUP_NAME, "interval": interval, "rules": [a.rule() for a in alerts(p)]}
        ]
    }


def prometheus_rule(p: AlertParams | None = None) -> dict[str, Any]:
    """The same rules as a Prometheus Operator ``PrometheusRule``."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "streams-alerts",
            "labels": {"app.kubernetes.io/part-of": "streams", "role": "alert-rules"},
        },
        "spec": rule_groups(p),
    }
