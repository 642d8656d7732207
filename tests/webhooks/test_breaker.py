"""Circuit breaker: pause after N failures in a row, one probe when the pause ends."""

from __future__ import annotations

from streams.webhooks.breaker import CircuitBreaker, origin


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_origin_is_scheme_host_port() -> None:
    assert origin("https://Hooks.Example.com/a?b") == "https://hooks.example.com:443"
    assert origin("http://127.0.0.1:8080/x") == "http://127.0.0.1:8080"
    assert origin("http://h/x") == "http://h:80"


def test_opens_after_threshold_failures_in_a_row_and_pauses() -> None:
    clock = Clock()
    b = CircuitBreaker(3, 60.0, clock)
    key = "http://h:80"
    for _ in range(2):
        assert b.wait_time(key) is None
        b.record(key, ok=False)
    assert not b.is_open(key)
    b.record(key, ok=False)
    assert b.is_open(key)
    assert b.paused_count() == 1
    assert b.wait_time(key) == 60.0
    clock.now += 59.0
    assert b.wait_time(key) == 1.0
    assert b.wait_time("http://other:80") is None  # other origins unaffected


def test_success_in_between_resets_the_count() -> None:
    b = CircuitBreaker(3, 60.0, Clock())
    key = "http://h:80"
    for ok in (False, False, True, False, False):
        b.record(key, ok=ok)
    assert not b.is_open(key)


def test_half_open_lets_one_probe_through() -> None:
    clock = Clock()
    b = CircuitBreaker(1, 10.0, clock)
    key = "http://h:80"
    b.record(key, ok=False)
    clock.now += 10.0
    assert b.paused_count() == 0  # the pause is over
    assert b.wait_time(key) is None  # the probe
    wait = b.wait_time(key)
    assert wait is not None and 0 < wait <= 10.0  # others wait for the probe's answer
    b.record(key, ok=False)  # the probe failed: paused again
    assert b.wait_time(key) == 10.0
    clock.now += 10.0
    assert b.wait_time(key) is None
    b.record(key, ok=True)  # the probe succeeded: closed
    assert not b.is_open(key)
    assert b.wait_time(key) is None
