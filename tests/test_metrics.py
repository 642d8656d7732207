"""Histogram observations in bulk count as the same observations made one by one."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram

from streams.metrics import observe_many


def samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for metric in histogram.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def test_observe_many_fills_the_buckets_and_sum_as_observe_one_by_one() -> None:
    registry = CollectorRegistry()
    one = Histogram("one_seconds", "x", ("kind",), registry=registry, buckets=(0.1, 0.5, 1, 5))
    many = Histogram(
        "one_seconds", "x", ("kind",), registry=CollectorRegistry(), buckets=(0.1, 0.5, 1, 5)
    )
    rng = random.Random(5)
    # On a bound, between, beyond the last finite one, zero and negative.
    amounts = [0.1, 0.5, 1.0, 5.0, 0.0, -1.0, 7.5, *(rng.uniform(0, 8) for _ in range(500))]
    for amount in amounts:
        one.labels("a").observe(amount)
    observe_many(many.labels("a"), amounts)
    observe_many(many.labels("a"), [])  # nothing observed: nothing changes
    assert samples(many) == samples(one)
    assert samples(one)[("one_seconds_count", "")] == len(amounts)
