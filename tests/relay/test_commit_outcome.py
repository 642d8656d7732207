"""The relay's batch loses its connection during COMMIT (a proxy in front of the real
PostgreSQL drops the COMMIT's answer, or the COMMIT itself): the relay learns the
outcome by re-reading the rows, goes on, and every row is published exactly once.
Before: the pass failed with OperationalError, and when the COMMIT had not reached
PostgreSQL every acknowledged row of the batch was published a second time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from streams.metrics import REGISTRY
from streams.relay.relay import Relay
from streams.settings import Secret, Settings
from tests.relay.commit_proxy import CommitProxy, Mode
from tests.relay.support import TopicReader, ids_of, queued, write


@pytest.fixture
def proxy(settings: Settings) -> Iterator[CommitProxy]:
    target = int(conninfo_to_dict(settings.database_url.get()).get("port") or 5432)
    p = CommitProxy(target)
    try:
        yield p
    finally:
        p.close()


def _resolved(outcome: str) -> float:
    labels = {"kind": "relay_delete", "outcome": outcome}
    return REGISTRY.get_sample_value("streams_commit_outcomes_resolved_total", labels) or 0.0


@pytest.mark.allow_errors  # the lost connection is logged
@pytest.mark.parametrize(("mode", "outcome"), [("after", "committed"), ("before", "not_committed")])
def test_a_lost_commit_answer_is_resolved_and_each_row_goes_out_once(
    settings: Settings, proxy: CommitProxy, mode: Mode, outcome: str
) -> None:
    dsn = settings.database_url.get()
    proxied = make_conninfo(dsn, host="127.0.0.1", port=proxy.port)
    relay = Relay(settings.with_(database_url=Secret(proxied)), concurrency=1)
    relay.pool.open(wait=True)
    reader = TopicReader(settings, ["outbox.region"])
    ids = write(dsn, [(shard, shard) for shard in range(40)])
    before = _resolved(outcome)
    try:
        proxy.arm(mode, b"DELETE FROM")
        relay.run_pass()  # before: OperationalError (server closed the connection)
        assert proxy.fired.is_set()
        while queued(dsn):
            relay.run_pass()
        published = Counter(ids_of(reader.drain(quiet=1.0)))
    finally:
        reader.close()
        relay.close()
    print(f"lost COMMIT ({mode}): {sum(published.values())} messages for {len(ids)} rows")
    assert set(published) == set(ids)  # none lost
    assert max(published.values()) == 1  # none twice
    assert _resolved(outcome) == before + 1
