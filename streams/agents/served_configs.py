"""Feeding the served-configs table from ``project-configs``, a batch at a time.

One event at a time, each config cost a Faust table write and a changelog record on
Faust's per-record producer path: with a config per countdown window that was the
largest cost of a recompute at 100k projects (bench/README.md). A batch writes the
table's dict directly and its changelog through librdkafka (``ChangelogWriter``), on
the message's own partition (``project-configs`` and the table are co-partitioned),
and waits for the changelog before the batch is acknowledged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from streams.agents.base import Message
from streams.errors import DecodeError
from streams.projectconfigs.changelog import ChangelogWriter


class ServedFeed:
    """Handlers for the feed agent over a bytes -> bytes table (``table.data``)."""

    def __init__(
        self, table: Any, changelog: ChangelogWriter, render: Callable[[Any], bytes]
    ) -> None:
        self.table = table
        self.changelog = changelog
        self.render = render

    async def handle_batch(self, msgs: Sequence[Message]) -> None:
        # Everything is rendered before anything is written: a bad message fails the
        # batch, which the wrapper then replays one by one (the bad one dead-lettered).
        rows: list[tuple[int, bytes, bytes | None]] = []
        for msg in msgs:
            if not msg.key:
                raise DecodeError("project-configs message without a key")
            doc = None if msg.value is None else self.render(msg.value)
            rows.append((msg.partition, msg.key, doc))
        data, send = self.table.data, self.changelog.send_raw
        for partition, key, doc in rows:
            if doc is None:
                data.pop(key, None)  # a tombstone: the key is deleted
            else:
                data[key] = doc
            send(partition, key, doc)
        await self.changelog.flush()

    async def handle(self, msg: Message) -> None:
        await self.handle_batch([msg])
