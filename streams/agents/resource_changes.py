"""Agent ``resource-changes``: one ``webhook-deliveries`` request per subscribed target.

Topic: ``resource-changes`` (key: organization id). For each change: the sender must
be allow-listed (else dead letter, reason ``unknown_sender``); the instance is read
from PostgreSQL (for ``deleted`` the change's ``data`` snapshot stands in for the
gone row). A row that is not visible yet (the change was published before its
transaction committed) is looked up again twice within 0.3 s; if it is still
missing, the change is sent again later through ``scheduled_messages`` (the relay's
pump publishes it): ``resource_change_retries`` times (default 5),
``resource_change_retry_delay`` apart (default 5 minutes), so no partition waits for
it. Only after the last retry is it dead-lettered (reason ``instance_missing``,
replayable), never dropped. Every
installed sentry-app installation of the organization subscribed to
``<resource>.<action>`` and every active service hook of the project subscribed to
``<hook event>.<action>`` gets exactly one delivery request, keyed by target.
Delivery ids derive from (topic, partition, offset, target), or for a retried change
from (its first message's id, retry number, target), so a reprocessed change yields
the same ids (receivers can drop duplicates by ``Request-ID``).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from streams import metrics
from streams.agents.base import AgentSpec, Message, Retry, RetryPolicy, attach
from streams.agents.batch_io import Outgoing, dead_letter, publish_all
from streams.agents.deferred import Later, store_later
from streams.db.pool import reading
from streams.dlq.headers import Failure, FailureReason
from streams.errors import RetryLater
from streams.runtime import Runtime
from streams.silo import REGION_ONLY
from streams.tracing import H_MESSAGE_ID
from streams.webhooks import payloads, resources
from streams.webhooks.resources import Instance, Project, Resource, UnknownSender

log = logging.getLogger(__name__)

AGENT = "resource_changes"
TOPIC: Final = "resource-changes"
OUT_TOPIC: Final = "webhook-deliveries"
# A row committed a moment after its change was published: looked up again in process
# twice (0.1 s, then 0.2 s) before the change is retried later (delayed path).
VISIBILITY_RETRY = RetryPolicy(times=2, delay=0.1, backoff=2.0, max_delay=0.2)
# Header of a retried change: the id of the change's first message (dedupe, delivery ids).
H_ORIGIN = "resource_change.origin"
DELIVERY_NS = uuid.UUID("6f1c8d3e-2b7a-4f0e-9d51-7d2c43a1b9e5")

CHANGES = metrics.counter(
    "streams_resource_changes_total",
    "Resource changes processed, by resource and outcome.",
    ("resource", "outcome"),
)
REQUESTED = metrics.counter(
    "streams_webhook_deliveries_requested_total",
    "Delivery requests published to webhook-deliveries, by target kind.",
    ("kind",),
)
REFUSED_HOOKS = metrics.counter(
    "streams_service_hook_refused_total",
    "Service hook firings refused because the hook's payload version is not supported.",
)


Rejected = tuple[Message, Failure]


@dataclass(frozen=True)
class Change:
    msg: Message
    resource: Resource
    action: str
    instance_id: int
    actor_id: int | None


class ResourceChanges:
    """The handler; one per worker."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def handle(self, msg: Message) -> None:
        await self.handle_batch([msg])

    async def handle_batch(self, msgs: Sequence[Message]) -> None:
        # Reads first, outputs last: if a read fails, nothing was emitted yet, so the
        # wrapper's one-by-one fallback cannot duplicate deliveries or dead letters.
        changes, rejects = self._known(msgs)
        instances, subs, missing = await self._instances(changes)
        visible = [c for c in changes if (c.resource.name, c.instance_id) in instances]
        out: list[Outgoing] = []
        if visible:
            out = await self._plan_all(visible, instances, subs)
        later, missing = self._retries(missing)
        # The only output that may raise, so first (and idempotent: dedupe ids).
        await store_later(self.runtime, later)
        # Deliveries on partitions this worker's webhook_delivery consumer owns are
        # attempted at once, not read back from the topic (wrapper/handoff.py).
        handoff = self.runtime.handoffs.get(OUT_TOPIC)
        published = await publish_all(self.runtime, out, agent=AGENT, keep=handoff is not None)
        if handoff is not None and published:
            handoff.offer(published)
        for o in out:
            REQUESTED.labels(o.value["target_kind"]).inc()
        for msg, failure in rejects + missing:
            await dead_letter(self.runtime, AGENT, msg, failure)

    def _known(self, msgs: Sequence[Message]) -> tuple[list[Change], list[Rejected]]:
        changes, rejects = [], []
        for msg in msgs:
            v = msg.value
            try:
                resource = resources.resource_for(v["sender"])
            except UnknownSender as exc:
                CHANGES.labels("unknown", "unknown_sender").inc()
                rejects.append((msg, Failure.of(FailureReason.UNKNOWN_SENDER, exc)))
                continue
            changes.append(
                Change(msg, resource, v["action"], int(v["instance_id"]), v.get("actor_id"))
            )
        return changes, rejects

    def _retries(self, missing: list[Rejected]) -> tuple[list[Later], list[Rejected]]:
        """Changes to look at again later, and those whose retries are spent."""
        s = self.runtime.settings
        later, spent = [], []
        for msg, failure in missing:
            retry = msg.attempt  # the first message is attempt 1, its first retry 2
            if retry > s.resource_change_retries:
                spent.append((msg, failure))
                continue
            origin = _origin(msg)
            later.append(
                Later(
                    TOPIC,
                    msg.value,
                    msg.key.decode() if msg.key else str(msg.value["organization_id"]),
                    s.resource_change_retry_delay,
                    f"resource_change:{_message_id(msg)}",
                    attempt=retry + 1,
                    headers={H_ORIGIN: origin},
                    trace=msg.trace,
                )
            )
            CHANGES.labels(resources.resource_for(msg.value["sender"]).name, "retry_later").inc()
            log.info(
                "resource_change.retry_scheduled",
                extra={"origin": origin, "retry": retry, "delay": s.resource_change_retry_delay},
            )
        return later, spent

    async def _instances(
        self, changes: list[Change]
    ) -> tuple[dict[tuple[str, int], Instance], resources.Subscribers | None, list[Rejected]]:
        """Visible instances (a short in-process wait for rows not committed yet), with
        their subscribers when the first read found them all (one round trip); the
        rest as missing, for ``_retries`` to send again later or dead-letter."""
        found: dict[tuple[str, int], Instance] = {
            (c.resource.name, c.instance_id): _snapshot(c) for c in changes if c.action == "deleted"
        }
        pending = [c for c in changes if c.action != "deleted"]
        if not pending:
            return found, None, []
        pool = await self.runtime.pool()
        attempt, waited = 0, 0.0
        subs: resources.Subscribers | None = None
        while True:
            wanted = {
                r: sorted({c.instance_id for c in pending if c.resource == r})
                for r in {c.resource for c in pending}
            }
            async with reading(pool) as conn:
                if attempt == 0:
                    loaded, subs = await resources.load_with_subscribers(
                        conn,
                        wanted,
                        sorted({i.project.id for i in found.values()}),
                        sorted({c.actor_id for c in changes if c.actor_id is not None}),
                    )
                else:
                    subs = None  # rows found late: their subscribers are read after
                    loaded = {
                        (r.name, iid): inst
                        for r, ids in wanted.items()
                        for iid, inst in (await resources.load(conn, r, ids)).items()
                    }
            found.update(loaded)
            pending = [c for c in pending if (c.resource.name, c.instance_id) not in found]
            attempt += 1
            decision = VISIBILITY_RETRY.decide(RetryLater("instance not visible"), attempt)
            if not pending or not isinstance(decision, Retry):
                break
            log.info("resource_change.instance_not_visible", extra={"count": len(pending)})
            await self.runtime.clock.sleep(decision.delay)
            waited += decision.delay
        missing = []
        for c in pending:
            if c.msg.attempt > self.runtime.settings.resource_change_retries:
                CHANGES.labels(c.resource.name, "instance_missing").inc()
            reason = (
                f"{c.resource.table} {c.instance_id} not visible after "
                f"{c.msg.attempt - 1} delayed retries (+{waited:.1f}s)"
            )
            missing.append((c.msg, Failure(FailureReason.INSTANCE_MISSING, "RetryLater", reason)))
        return found, subs, missing

    async def _plan_all(
        self,
        visible: list[Change],
        instances: dict[tuple[str, int], Instance],
        subs: resources.Subscribers | None,
    ) -> list[Outgoing]:
        if subs is None:
            pool = await self.runtime.pool()
            projects = {instances[c.resource.name, c.instance_id].project for c in visible}
            async with reading(pool) as conn:
                subs = await resources.subscribers(
                    conn,
                    sorted({p.organization_id for p in projects}),
                    sorted({p.id for p in projects}),
                    sorted({c.actor_id for c in visible if c.actor_id is not None}),
                )
        out: list[Outgoing] = []
        for c in visible:
            inst = instances[c.resource.name, c.instance_id]
            planned = self._plan(c, inst, subs)
            CHANGES.labels(c.resource.name, "fanned_out" if planned else "no_subscriber").inc()
            out += planned
        return out

    def _plan(self, c: Change, inst: Instance, subs: resources.Subscribers) -> list[Outgoing]:
        out = []
        event = f"{c.resource.name}.{c.action}"
        actor = payloads.actor(c.actor_id, subs.actors)
        encoded: tuple[str, str] | None = None  # data and actor JSON, once per change
        for i in subs.installations.get(inst.project.organization_id, []):
            if not resources.subscribed(i.events, c.resource.name, c.action):
                continue
            if encoded is None:
                encoded = payloads.dumps(inst.data), payloads.dumps(actor)
            payload = payloads.sentry_app_json(
                action=c.action,
                installation_uuid=i.uuid,
                resource=c.resource.name,
                data_json=encoded[0],
                actor_json=encoded[1],
            )
            out.append(
                _delivery(
                    c.msg,
                    kind="sentry_app",
                    target_id=i.id,
                    event=event,
                    resource=c.resource.name,
                    payload=payload,
                )
            )
        if c.resource.hook_event is None:
            return out
        for h in subs.hooks.get(inst.project.id, []):
            if not resources.subscribed(h.events, c.resource.hook_event, c.action):
                continue
            try:
                payload = payloads.dumps(payloads.service_hook(h.version, inst, hook_id=h.id))
            except payloads.UnsupportedHookVersion as exc:
                REFUSED_HOOKS.inc()
                log.error(
                    "service_hook.version_unsupported", extra={"hook": h.id, "error": str(exc)}
                )
                continue
            hook_event = f"{c.resource.hook_event}.{c.action}"
            out.append(
                _delivery(
                    c.msg,
                    kind="service_hook",
                    target_id=h.id,
                    event=hook_event,
                    resource=c.resource.name,
                    payload=payload,
                )
            )
        return out


def _snapshot(c: Change) -> Instance:
    """A deleted row, as the change describes it (its ``data`` JSON, else just the id)."""
    v = c.msg.value
    data: dict[str, Any] = {}
    if v.get("data"):
        try:
            loaded = json.loads(v["data"])
            data = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            data = {}
    data.setdefault("id", str(c.instance_id))
    project = Project(int(v.get("project_id") or 0), int(v["organization_id"]), "", "")
    return Instance(c.resource, c.instance_id, project, data, None)


def _message_id(msg: Message) -> str:
    """The consumed message's own id: the same for a redelivery or a copy of it (so it
    schedules one retry), new for each retry and for a replayed dead letter."""
    if msg.headers.get(H_MESSAGE_ID):
        return msg.headers[H_MESSAGE_ID].decode(errors="replace")
    # A producer without ids: the position, and the time (a broker reset reuses offsets).
    return f"{msg.topic}:{msg.partition}:{msg.offset}:{round(msg.timestamp * 1000)}"


def _origin(msg: Message) -> str:
    """The id of a change's first message: its origin header once retried."""
    if msg.headers.get(H_ORIGIN):
        return msg.headers[H_ORIGIN].decode(errors="replace")
    return _message_id(msg)


def _delivery(
    msg: Message, *, kind: str, target_id: int, event: str, resource: str, payload: str
) -> Outgoing:
    # A retried change may be published twice by the pump (at least once): its copies
    # share the origin and attempt headers, so they yield the same delivery ids.
    if H_ORIGIN in msg.headers:
        name = f"{_origin(msg)}#{msg.attempt}:{kind}:{target_id}"
    else:
        name = f"{msg.topic}:{msg.partition}:{msg.offset}:{kind}:{target_id}"
    now = int(time.time() * 1000)
    value = {
        "delivery_id": str(uuid.uuid5(DELIVERY_NS, name)),
        "target_kind": kind,
        "target_id": target_id,
        "event_type": event,
        "resource": resource,
        "payload": payload,
        "attempt": 1,
        "not_before": now,
        "created_at": now,
    }
    return Outgoing(OUT_TOPIC, value, f"{kind}:{target_id}", msg.trace)


def install(app: Any, runtime: Runtime) -> None:
    handler = ResourceChanges(runtime)
    attach(
        app,
        runtime,
        AgentSpec(
            name=AGENT,
            topic=TOPIC,
            silos=REGION_ONLY,
            handler=handler.handle,
            batch_handler=handler.handle_batch,
            # Infrastructure errors only (the handler settles bad input itself).
            retry=RetryPolicy(times=3, delay=0.5),
            deadline=60.0,
            batch_size=500,
            batch_within=0.0,  # batches of what is ready: no timer on the path
            direct=True,  # stateless: a librdkafka consumer, one commit per batch
        ),
    )
