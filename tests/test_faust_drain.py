"""The one-task drain (streams/faust_drain.py) behaves as Service.wait_first for the
consumer's per-record call: returns when the callback is done or the flow stops,
cancels an unfinished callback, re-raises its error. Workers run with it (the
agent tests, rebalances and kill -9 included)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import re
from pathlib import Path
from typing import Any

import pytest

from streams import faust_drain
from streams.publisher import Publisher
from tests.support import harness
from tests.support import probe_agent as probe


class FakeConsumer:
    """What ``Service.wait_first`` and the drain read from Faust's consumer."""

    def __init__(self) -> None:
        self.suspend_flow = asyncio.Event()
        self._stopped = asyncio.Event()
        self._crashed = asyncio.Event()
        self.loop = asyncio.get_running_loop()


async def drain_one(consumer: FakeConsumer, callback: Any) -> Any:
    # The exact call shape of faust.transport.consumer.Consumer._drain_messages.
    return await faust_drain.wait_first(consumer, callback, consumer.suspend_flow.wait())


def test_records_run_to_completion_through_one_long_lived_gate() -> None:
    async def main() -> None:
        consumer = FakeConsumer()
        done: list[int] = []

        async def handle(n: int) -> None:
            await asyncio.sleep(0)
            done.append(n)

        await drain_one(consumer, handle(1))
        gate = consumer.__dict__[faust_drain._GATE]
        await drain_one(consumer, handle(2))
        assert done == [1, 2]
        assert consumer.__dict__[faust_drain._GATE] is gate and not gate.done()
        consumer._stopped.set()
        await asyncio.wait_for(gate, 1)

    asyncio.run(main())


def test_a_record_queued_without_waiting_needs_no_task_and_keeps_its_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="outer")

    async def main() -> None:
        consumer = FakeConsumer()
        seen: list[tuple[str, int]] = []

        async def handle() -> None:
            var.set("callback")
            seen.append((var.get(), len(asyncio.all_tasks())))

        tasks = len(asyncio.all_tasks())  # this one (and the gate, once started)
        await drain_one(consumer, handle())
        await drain_one(consumer, handle())
        assert seen == [("callback", tasks + 1), ("callback", tasks + 1)]
        assert var.get() == "outer"  # as in a task of its own
        consumer._stopped.set()

    asyncio.run(main())


def test_suspending_the_flow_cancels_a_blocked_callback() -> None:
    async def main() -> None:
        consumer = FakeConsumer()
        blocked = asyncio.Event()
        cancelled = asyncio.Event()

        async def handle() -> None:
            blocked.set()
            try:
                await asyncio.sleep(30)  # a full stream queue
            except asyncio.CancelledError:
                cancelled.set()
                raise

        waiting = asyncio.ensure_future(drain_one(consumer, handle()))
        await blocked.wait()
        consumer.suspend_flow.set()
        await asyncio.wait_for(waiting, 1)
        await asyncio.wait_for(cancelled.wait(), 1)
        # While suspended, calls take Service.wait_first's own path (returns at once).
        ran: list[bool] = []

        async def quick() -> None:
            ran.append(True)

        await asyncio.wait_for(drain_one(consumer, quick()), 1)
        consumer.suspend_flow.clear()
        await drain_one(consumer, quick())
        assert ran[-1] is True

    asyncio.run(main())


def test_a_failing_callback_raises_to_the_consumer() -> None:
    async def main() -> None:
        consumer = FakeConsumer()

        async def handle() -> None:
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            await drain_one(consumer, handle())
        consumer._stopped.set()

    asyncio.run(main())


def test_other_calls_are_service_wait_first() -> None:
    async def main() -> None:
        consumer = FakeConsumer()
        other = asyncio.Event()
        other.set()
        result = await faust_drain.wait_first(consumer, other)
        assert result.done == [other] and not result.stopped
        assert faust_drain._GATE not in consumer.__dict__

    asyncio.run(main())


def _sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{"):
            got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if all(got.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_real_worker_hands_records_over_on_the_fast_path(
    real_stack: harness.Stack, template_db: str, tmp_path: Path
) -> None:
    with harness.probe_settings(real_stack, template_db) as settings:
        proc = harness.start_worker(settings, tmp_path / "worker.log")
        try:
            with contextlib.closing(Publisher(settings)) as pub:
                for i in range(20):
                    pub.publish(probe.TOPIC, {"id": i, "action": "ok", "note": ""}, key=str(i))
                pub.flush()

            def fast_drains() -> float:
                text = proc.get("/metrics")[1].decode()
                return _sample(text, "streams_faust_drains_total", path="fast")

            # Every record of the probe topic went through faust_drain.wait_first.
            harness.wait_for(lambda: fast_drains() >= 20, 60, what="20 fast drains")
        finally:
            proc.stop()
