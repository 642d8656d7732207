"""A Faust, mode or aiokafka upgrade that changes a patched call fails here, loudly.

streams/faust_drain.py replaces the per-record ``wait_first`` call of Faust's consumer
loop; streams/faust_fetch.py sets the fetch wait aiokafka reads when it starts. Both
were verified on the versions in streams/faust_versions.py. These tests read the real
installed source of each call they rely on and compare it with the verified text: on
a mismatch, re-read the new source, re-verify the patch, then update the digest.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import re
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as driver
from mode import Service

from streams import faust_drain, faust_fetch, faust_versions


def _digest(fn: Any) -> str:
    return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16]


def _flat(fn: Any) -> str:
    return re.sub(r"\s+", "", inspect.getsource(fn))


# The sources the patches were verified against (faust-streaming 0.15.3,
# mode-streaming 0.7.1, aiokafka 0.14.0).
VERIFIED_SOURCES = {
    "Consumer._drain_messages": (faust_consumer.Consumer._drain_messages, "44a2500309e83c63"),
    "Service.wait_first": (Service.wait_first, "feade6a31f8a6789"),
    "AIOKafkaConsumerThread._create_worker_consumer": (
        driver.AIOKafkaConsumerThread._create_worker_consumer,
        "c2701bfc3e6f6cad",
    ),
    "AIOKafkaConsumer.start": (AIOKafkaConsumer.start, "2f1ba70443327538"),
}


@pytest.mark.parametrize("name", sorted(VERIFIED_SOURCES))
def test_patched_source_is_the_verified_one(name: str) -> None:
    fn, digest = VERIFIED_SOURCES[name]
    # Unwrap our own patch (faust_fetch wraps _create_worker_consumer in place).
    fn = getattr(fn, "__wrapped__", fn)
    libraries = faust_versions.installed(
        faust_versions.DRAIN_VERIFIED | faust_versions.FETCH_VERIFIED
    )
    assert _digest(fn) == digest, (
        f"{name} changed in the installed libraries ({libraries}): "
        "re-verify streams/faust_drain.py / faust_fetch.py against it"
    )


def test_drain_call_has_the_shape_the_fast_drain_recognises() -> None:
    # faust_drain.wait_first takes the fast path for exactly this call.
    assert "awaitself.wait_first(callback(message),self.suspend_flow.wait())" in _flat(
        faust_consumer.Consumer._drain_messages
    )


def test_fetch_wait_is_fixed_by_faust_and_read_by_aiokafka_start() -> None:
    create = driver.AIOKafkaConsumerThread._create_worker_consumer
    assert "fetch_max_wait_ms=1500," in _flat(getattr(create, "__wrapped__", create))
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms," in _flat(AIOKafkaConsumer.start)


def test_installed_versions_are_the_verified_ones() -> None:
    assert faust_versions.installed(faust_versions.DRAIN_VERIFIED) == faust_versions.DRAIN_VERIFIED
    assert faust_versions.installed(faust_versions.FETCH_VERIFIED) == faust_versions.FETCH_VERIFIED


@pytest.mark.allow_errors
def test_other_versions_fall_back_to_faust_with_an_error_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    upgraded = {"faust-streaming": "0.16.0", "mode-streaming": "0.7.1", "aiokafka": "0.14.0"}
    monkeypatch.setattr(faust_versions, "installed", lambda names: {k: upgraded[k] for k in names})
    caplog.set_level(logging.ERROR, "streams.faust_versions")
    try:
        assert faust_drain.enable(True) is False
        assert faust_consumer.Consumer.wait_first is faust_drain.counted_original
        assert faust_fetch.set_fetch_max_wait(0.1) is False
    finally:
        monkeypatch.undo()
        faust_drain.enable(True)
        faust_fetch.set_fetch_max_wait(None)
    lines = [r for r in caplog.records if r.getMessage() == "faust.patch.unverified"]
    assert {r.patch for r in lines} == {"fast_drain", "fetch_max_wait"}  # type: ignore[attr-defined]
    assert all("faust-streaming 0.16.0" in r.installed for r in lines)  # type: ignore[attr-defined]
    assert all("faust-streaming 0.15.3" in r.verified for r in lines)  # type: ignore[attr-defined]


def test_verified_versions_take_the_fast_drain() -> None:
    assert faust_drain.enable(True) is True
    assert faust_consumer.Consumer.wait_first is faust_drain.wait_first
