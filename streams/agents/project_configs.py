"""Computed project configs: published to ``project-configs``, served by public key.

``ConfigsOut`` publishes what a recompute produced. ``project-configs`` is keyed by
public key and written with the Java/aiokafka partitioner (murmur2), so the
partition of a key is the one Faust's router computes: ``GET
/api/project-configs/{public_key}`` is then answered by the worker that owns that
key's partition (other workers forward the request), from the
``project-configs-served`` table, which holds each key's value as published and
renders it when asked. The recompute writes that table itself for the partitions its
worker owns; an agent feeds the rest from the topic, which is also the table's
changelog (``streams.agents.served_configs``).

A key the table does not hold (an organization-level invalidation tombstones every
key of the organization; a key created since the last recompute) is looked up in
PostgreSQL: if it exists, its current config is computed and served (an inactive key
gets ``{"disabled": true}``) and a key-scope invalidation is requested, so the table
holds it again shortly. Only a key that does not exist gets 404.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from streams import catalogue, metrics
from streams.agents.base import AgentSpec, RetryPolicy, runs_here
from streams.agents.served_configs import ServedFeed, attach_direct_feed, attach_feed
from streams.agents.wrapper.direct import DirectConsumer
from streams.avro.codec import SingleObjectCodec
from streams.dlq.headers import Failure, FailureReason, Letter
from streams.errors import DecodeError
from streams.projectconfigs.changelog import ChangelogWriter
from streams.projectconfigs.debounce import DueWork
from streams.projectconfigs.documents import served_json
from streams.projectconfigs.publish import Sent, start_all
from streams.projectconfigs.recompute import Publication, recompute
from streams.projectconfigs.scopes import Scope, ScopeKind, request_value
from streams.publisher import Publisher
from streams.runtime import Runtime
from streams.settings import Settings
from streams.silo import REGION_ONLY

log = logging.getLogger(__name__)

TOPIC: Final = "project-configs"
REQUESTS: Final = "project-config-invalidations"
SERVED_TABLE = "project-configs-served"
FEED = "project-configs-served"  # the agent feeding the table
# librdkafka's name for the Java client's (and aiokafka's) default partitioner.
PARTITIONER = "murmur2_random"
H_WINDOW = "invalidation.window"  # the countdown window a published config satisfies
H_TRIGGER = "invalidation.trigger"
MISS_TRIGGER = "served_miss"  # the trigger of the invalidation a miss requests
_KEY_OWNERS = """
SELECT p.organization_id, k.project_id FROM project_key k
JOIN project p ON p.id = k.project_id
WHERE k.public_key = %s
"""

PUBLISHED = metrics.counter(
    "streams_project_configs_published_total",
    "project-configs messages acknowledged, by kind (config, disabled, tombstone).",
    ("kind",),
)
SERVED_KEYS = metrics.gauge(
    "streams_project_configs_served_keys",
    "Public keys the served-configs table of this worker holds (read when scraped).",
)
UNSERVABLE = metrics.counter(
    "streams_project_configs_unservable_total",
    "Served-table values that did not decode or render on a GET (then computed again).",
)
SERVED = metrics.counter(
    "streams_project_configs_served_total",
    "GET /api/project-configs/{public_key} answers, by HTTP status.",
    ("status",),
)


def headers_for(work: DueWork) -> list[tuple[str, bytes]]:
    """Where a published config came from (for tracing and latency measurements): the
    window, as '<scope key>@<requested_at ms>+<countdown ms>' (the countdown to its due
    time), and the trigger. Two headers, not four: a header costs librdkafka about a
    quarter of a microsecond per message (bench/README.md)."""
    key = work.key  # '<scope key>@<requested_at in ms>' (DueWork.key)
    requested_ms = key[key.rindex("@") + 1 :]
    countdown_ms = round(work.due * 1000) - int(requested_ms)
    return [
        (H_WINDOW, b"%s+%d" % (key.encode(), countdown_ms)),
        (H_TRIGGER, work.trigger.encode()),
    ]


def window_of(value: bytes) -> tuple[str, int, int]:
    """(scope key, requested_at ms, due ms) of an ``invalidation.window`` header."""
    scope, _, times = value.decode().rpartition("@")
    requested, _, countdown = times.partition("+")
    return scope, int(requested), int(requested) + int(countdown or 0)


class BuiltRecords:
    """The codec of ``ConfigsOut``'s publisher: it publishes only records built here, by
    ``config_record`` and ``disabled_record`` (their schema fit is unit-tested), so the
    per-record schema walk, about 40% of an encode, is skipped. fastavro's writer still
    refuses a value of the wrong type or a missing field."""

    def __init__(self, codec: SingleObjectCodec) -> None:
        self._codec = codec

    def encode(self, subject: str, value: Any) -> bytes:
        return self._codec.encode(subject, value, checked=True)

    def encoder(self, subject: str) -> Callable[[Any], bytes]:
        return self._codec.encoder(subject, checked=True)


def configs_publisher(settings: Settings, codec: SingleObjectCodec) -> Publisher:
    """The publisher of ``project-configs``: murmur2 partitions, ``BuiltRecords`` codec,
    reports of refused messages only; used by one ``ConfigsOut`` and nothing else."""
    built = cast(SingleObjectCodec, BuiltRecords(codec))
    # Refusals only: a batch is acknowledged by one flush (projectconfigs/publish.py).
    # A batch is produced, then flushed, and a flush sends at once whatever the linger:
    # 20 ms only gathers a pass's configs into fewer requests (as the relay's outbox
    # messages, streams/relay/relay.py), where 1 ms sent a request per millisecond of
    # producing.
    overrides: dict[str, Any] = {"delivery.report.only.error": True, "linger.ms": 20}
    return Publisher(settings, codec=built, partitioner=PARTITIONER, **overrides)


@dataclass
class ConfigsOut:
    """Publishes recompute results; dead-letters a recompute that keeps failing."""

    runtime: Runtime
    publisher: Publisher
    served: ServedFeed | None = None  # this worker's served table, fed directly if set

    @classmethod
    def for_runtime(cls, runtime: Runtime) -> ConfigsOut:
        return cls(runtime, configs_publisher(runtime.settings, runtime.codec))

    async def publish(self, pubs: Sequence[Publication]) -> None:
        """Send all, then wait for every acknowledgement (raises if one fails)."""
        await self.start(pubs).acknowledged()

    def start(self, pubs: Sequence[Publication]) -> Published:
        """Hand every config to the producer, in order, then write those of partitions
        this worker serves to its table, as encoded; ``acknowledged()`` on the result
        waits for the broker (raises if one fails; a failed publish is retried, the
        table then briefly holds the newer config). A changelog of the table's own is
        acknowledged with the configs."""
        items = [(p.public_key, p.value, headers_for(p.work)) for p in pubs]
        sent = start_all(self.publisher, TOPIC, items)
        served = self.served
        if served is None:
            return Published(pubs, sent)
        # In the same step as the produce: the feed cannot read them in between.
        direct = served.serve(zip((p.public_key for p in pubs), sent.values, strict=True))
        return Published(pubs, sent, served if direct else None, direct)

    async def dead_letter(self, work: DueWork, reason: str) -> None:
        """The request, re-encoded, so ``streams dlq replay`` can schedule it again."""
        value = request_value(
            work.scope,
            trigger=work.trigger,
            countdown=max(0.0, work.due - work.requested_at),
            requested_at=dt.datetime.fromtimestamp(work.requested_at, dt.UTC),
        )
        raw = self.runtime.codec.encode(REQUESTS, value)
        letter = Letter(
            raw,
            work.scope.message_key.encode(),
            [],
            Failure(FailureReason.RECOMPUTE, "RecomputeFailed", reason),
            self.runtime.topic(REQUESTS),
            work.partition,
            -1,
            "invalidation",
        )
        await self.runtime.dead_letters.send(letter)
        log.error("invalidation.dead_lettered", extra={"scope": work.scope.key, "reason": reason})


class Published:
    """A recompute's configs handed to the producer (``ConfigsOut.start``)."""

    def __init__(
        self,
        pubs: Sequence[Publication],
        sent: Sent,
        served: ServedFeed | None = None,
        direct: Sequence[bytes] = (),
    ) -> None:
        self.pubs, self.sent, self.served, self.direct = pubs, sent, served, direct

    async def acknowledged(self) -> None:
        served = self.served
        if served is None:
            await self.sent.acknowledged()
        else:
            try:
                await asyncio.gather(self.sent.acknowledged(), served.flushed())
            except BaseException:
                served.unsent(self.direct)  # in the log or not: the feed reads them
                raise
        kinds: dict[str, int] = {}
        for p in self.pubs:
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
        for kind, n in kinds.items():
            PUBLISHED.labels(kind).inc(n)


@dataclass
class OnMiss:
    """Serves a key the table does not hold, computed from PostgreSQL."""

    runtime: Runtime

    async def compute(self, public_key: str) -> bytes | None:
        """The served document of ``public_key`` as of now; None if there is no such key.

        Also asks for a key-scope recompute (debounced like any other request), so the
        table holds the key again and the next GET is answered from it.
        """
        pool = await self.runtime.pool()
        async with pool.connection() as conn:
            async with conn.transaction():
                cur = await conn.execute(_KEY_OWNERS, (public_key,))
                owners = await cur.fetchone()
            if owners is None:
                return None
            scope = Scope(ScopeKind.PUBLIC_KEY, int(owners[0]), int(owners[1]), public_key)
            now = time.time()
            work = DueWork(
                scope.kind.value, scope.organization_id, scope.project_id, public_key,
                MISS_TRIGGER, now, now, -1,
            )  # fmt: skip
            (pub,) = await recompute(conn, [work])
        await self._request(scope)
        return served_bytes(pub.value, True)

    async def _request(self, scope: Scope) -> None:
        value = request_value(scope, trigger=MISS_TRIGGER, countdown=0)
        try:
            await self.runtime.publisher.publish_async(REQUESTS, value, key=scope.message_key)
        except Exception as exc:  # served anyway; the next miss asks again
            log.warning(
                "project_configs.miss_request_failed",
                extra={"public_key": scope.public_key, "error": repr(exc)},
            )


def served_bytes(record: Any, trusted: bool = False) -> bytes:
    """The served JSON document for one ``project-configs`` value (``trusted``: built
    by this process's recompute, not read from the topic)."""
    try:
        return served_json(record, trusted=trusted)
    except (KeyError, ValueError, TypeError) as exc:
        raise DecodeError(f"not a servable project config: {exc!r}") from exc


def _changelog_topic(app: Any, source: str, partitions: int, shared: bool = False) -> Any:
    """The served table's changelog: ``project-configs`` itself (``shared``), or the
    table's own, named as Faust names a changelog."""
    # Not Faust's default name: before 0.2 the table's own changelog held JSON documents.
    name = source if shared else f"{app.conf.id}-{SERVED_TABLE}-avro-changelog"
    return app.topic(
        name,
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        compacting=True,
        deleting=False,
    )


def install(app: Any, runtime: Runtime) -> None:
    if not runs_here(runtime, FEED, REGION_ONLY):
        return  # before the table: a skipped agent creates nothing
    spec = catalogue.spec(TOPIC)
    source = runtime.topic(TOPIC)
    direct = runtime.settings.direct_consumers
    # With the direct feed, the table's changelog is the topic itself: a published
    # config is its changelog record, and a worker taking a partition recovers the
    # table from ``project-configs``. A Faust agent cannot read a topic that is also a
    # changelog (Faust pauses an active changelog partition once it is recovered), so
    # with STREAMS_DIRECT_CONSUMERS=0 the table keeps a changelog of its own.
    own_changelog = None if direct else _changelog_topic(app, source, spec.partitions)
    served = app.Table(
        SERVED_TABLE,
        default=None,
        partitions=spec.partitions,
        key_type=bytes,
        value_type=bytes,
        changelog_topic=own_changelog or _changelog_topic(app, source, spec.partitions, True),
        help="The latest project-configs value per public key (Avro bytes).",
    )
    SERVED_KEYS.set_function(lambda: len(served.data))
    changelog_name = served.changelog_topic.get_topic_name()
    # Partitioned as the topic (murmur2), for the records ServedFeed.serve leaves unassigned.
    changelog = (
        None
        if own_changelog is None
        else ChangelogWriter(
            runtime.settings, changelog_name, name=SERVED_TABLE, partitioner=PARTITIONER
        )
    )

    def actives() -> set[int]:
        """The table's partitions Faust assigned to this worker: ``table_route`` sends
        their keys' requests here (the changelog's active partitions)."""
        wanted = changelog_name if direct else source
        return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == wanted}

    def owned() -> set[int]:
        # Nothing while partitions move or the table recovers: recovery would write
        # older records over a direct write.
        if app.rebalancing or getattr(app, "in_recovery", False):
            return set()
        return feeding.following() if feeding is not None else actives()

    feed = ServedFeed(served, changelog, served_bytes, spec.partitions, owned)
    app.streams_served_feed = feed  # the recompute finds it here (served_configs.feed_of)

    feed_spec = AgentSpec(
        FEED,
        TOPIC,
        REGION_ONLY,
        feed.handle,
        # A bad message never heals: it goes to the dead letters at once.
        retry=RetryPolicy(times=0),
        deadline=None,
        batch_handler=feed.handle_batch,  # writes name each message's partition
        batch_size=2_000,
        batch_within=0.01,
        tombstones=True,
        direct=True,
        # Not on a user's latency path (see invalidation's spec): 50 ms, not 10.
        fetch_wait=0.05,
    )
    feeding: DirectConsumer | None = None
    if direct:
        feeding = attach_direct_feed(app, runtime, feed_spec, feed, actives)
    else:
        attach_feed(app, runtime, feed_spec, feed)

    on_miss = OnMiss(runtime)

    async def get_config(view: Any, request: Any, public_key: str) -> Any:
        # Keys stay bytes (the raw serializer), as they come back from the changelog.
        value = served.get(public_key.encode())
        doc = None
        if value is not None:
            try:
                doc = served_bytes(runtime.codec.decode(TOPIC, value))
            except DecodeError as exc:
                # Recovered from the log unchecked (the feed dead-letters it when it reads
                # it): answered as a key the table does not hold, which also requests a
                # recompute that replaces it.
                log.error(
                    "project_configs.unservable",
                    extra={"public_key": public_key, "error": repr(exc)},
                )
                UNSERVABLE.inc()
        if doc is None:
            try:
                doc = await on_miss.compute(public_key)
            except Exception as exc:  # the database is down: say so, not "no such key"
                extra = {"public_key": public_key, "error": repr(exc)}
                log.warning("project_configs.miss_failed", extra=extra)
                SERVED.labels("503").inc()
                return view.json({"detail": "config not available, try again"}, status=503)
        if doc is None:
            SERVED.labels("404").inc()
            return view.json({"detail": f"no config for {public_key!r}"}, status=404)
        SERVED.labels("200").inc()
        return view.bytes(doc, content_type="application/json")

    routed = app.table_route(table=served, match_info="public_key")(get_config)
    app.page("/api/project-configs/{public_key}")(routed)
