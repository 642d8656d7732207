"""The dashboards cover what operators asked for and are well-formed Grafana JSON."""

from __future__ import annotations

import json

from streams.ops import dashboards
from streams.ops.promql import metric_names
from tests.ops.conftest import K8S

# What the issue asks to see, as the metrics that show it.
REQUIRED = {
    "lag in messages": "kafka_consumergroup_group_sum_lag",
    "lag in seconds": "kafka_consumergroup_group_max_lag_seconds",
    "agent throughput and failures": "streams_agent_messages_total",
    "agent duration percentiles": "streams_agent_duration_seconds_bucket",
    "dead-letter rate": "streams_dead_letters_total",
    "relay oldest row age": "streams_relay_oldest_pending_seconds",
    "relay queued rows": "streams_relay_queued_rows",
    "debounce scheduled": "streams_invalidation_scheduled_total",
    "debounce skipped": "streams_invalidation_skipped_total",
    "buffer flush statements": "streams_buffer_statements_total",
}


def test_dashboards_show_everything_asked_for() -> None:
    used = set().union(*(metric_names(q) for b in dashboards.DASHBOARDS for q in b.queries()))
    missing = {what: m for what, m in REQUIRED.items() if m not in used}
    assert not missing
    top = [q for q in dashboards.LAG.queries() if q.startswith("topk(")]
    assert top, "no top-groups panel"


def test_dashboard_json_is_well_formed() -> None:
    for board in dashboards.DASHBOARDS:
        on_disk = json.loads((K8S / "base" / "dashboards" / f"{board.uid}.json").read_text())
        assert on_disk == board.render()
        ids = [p["id"] for p in on_disk["panels"]]
        assert len(ids) == len(set(ids)), "duplicate panel ids"
        for panel in on_disk["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, panel["title"]
            if panel["type"] == "row":
                continue
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(refs) == len(set(refs)), panel["title"]
            assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]
