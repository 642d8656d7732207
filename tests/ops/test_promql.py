"""The PromQL metric-name reader the dashboard and rule checks rest on."""

from __future__ import annotations

import pytest

from streams.ops.promql import exposition_names, metric_names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        (
            'rate(streams_agent_messages_total{outcome="failure"}[5m])',
            {"streams_agent_messages_total"},
        ),
        (
            "histogram_quantile(0.99, sum by (le, agent) "
            "(rate(streams_agent_duration_seconds_bucket[$__rate_interval])))",
            {"streams_agent_duration_seconds_bucket"},
        ),
        (
            'topk(10, max by (group) (kafka_consumergroup_group_max_lag_seconds{group=~"$group"}))',
            {"kafka_consumergroup_group_max_lag_seconds"},
        ),
        ('absent(up{job="streams-worker", silo="region"} == 1)', {"up"}),
        (
            "sum(rate(a_total[1m])) / ignoring(kind) group_left sum(b) > bool 0 unless c offset 5m",
            {"a_total", "b", "c"},
        ),
        ("max_over_time(x[10m:1m]) * 1e3 + 5", {"x"}),
        ('label_replace(y, "dst", "$1", "src", "(.*)")', {"y"}),
        ("sum without (instance) (z) or on() vector(0)", {"z"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_exposition_names_cover_families_without_samples() -> None:
    text = """# HELP a_total Things.
# TYPE a_total counter
# HELP h Time.
# TYPE h histogram
h_bucket{le="1.0"} 1.0
# TYPE g gauge
g{x="1"} 2.0
"""
    names = exposition_names(text)
    assert {"a_total", "h_bucket", "h_sum", "h_count", "g"} <= names
    assert "a" not in names
