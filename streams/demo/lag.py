"""The lag fragment of the ``streams up`` status line, read from the running exporter."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from streams.settings import Settings


def metrics_url(settings: Settings) -> str:
    return f"http://{settings.web_host}:{settings.lag_exporter_port}/metrics"


def status(settings: Settings, timeout: float = 0.5) -> str:
    """``lag=<messages>/<seconds>s`` of the worker's consumer group, ``lag=?`` if unknown."""
    try:
        with urllib.request.urlopen(metrics_url(settings), timeout=timeout) as resp:
            text = resp.read().decode()
    except OSError:
        return "lag=?"
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("group") == settings.app_id and sample.name in (
                "kafka_consumergroup_group_sum_lag",
                "kafka_consumergroup_group_max_lag_seconds",
            ):
                values[sample.name] = sample.value
    if not values:
        return "lag=?"
    lag = int(values.get("kafka_consumergroup_group_sum_lag", 0))
    seconds = values.get("kafka_consumergroup_group_max_lag_seconds", 0.0)
    return f"lag={lag}/{seconds:.1f}s"
