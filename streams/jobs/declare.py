"""Declaring a job and sending runs of it: ``job(...)``, ``delay``, ``apply_async``."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import psycopg

from streams.avro.codec import SingleObjectCodec
from streams.avro.store import SchemaStore, load_version
from streams.delayed.due import delay_seconds
from streams.delayed.store import Scheduled, insert_async
from streams.jobs import registry
from streams.publisher import Delivered
from streams.silo import ALL_SILOS, SiloMode

if TYPE_CHECKING:
    from streams.jobs.context import JobContext

Handler = Callable[..., Awaitable[None] | None]


class RetryLike(Protocol):
    """``streams.agents.base.RetryPolicy`` (not imported: agents sit above jobs).

    The jobs agent asks it what to do after a failed attempt; it answers with one of
    the wrapper's decisions (``Retry``, ``DeadLetter``, ``Ignore``).
    """

    def decide(self, exc: BaseException, attempt: int) -> object: ...


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,199}$")
# One schema store for every job's argument record: subject = "job:<name>".
_STORE = SchemaStore([])
_CODEC = SingleObjectCodec(_STORE)


def _args_schema(name: str, args: Mapping[str, Any]) -> dict[str, Any]:
    fields: list[dict[str, Any]] = []
    for arg, avro_type in args.items():
        f: dict[str, Any] = {"name": arg, "type": avro_type}
        if isinstance(avro_type, list) and avro_type and avro_type[0] == "null":
            f["default"] = None  # optional argument: may be left out
        fields.append(f)
    record = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return {"type": "record", "name": record, "namespace": "io.streams.jobs.args", "fields": fields}


@dataclass(eq=False)
class Job:
    """A declared job. Call ``delay``/``apply_async`` (or the ``a``-prefixed async forms)."""

    name: str
    handler: Handler
    args: Mapping[str, Any]
    silos: frozenset[SiloMode] = ALL_SILOS
    retry: RetryLike | None = None  # None: the default RetryPolicy()
    deadline: float | None = 60.0
    version: int = 1
    qualname: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"job name {self.name!r}: letters, digits, '_', '.', '-' only")
        self.subject = f"job:{self.name}"
        _STORE.add(load_version(self.subject, self.version, _args_schema(self.name, self.args)))
        self._optional = [
            a for a, t in self.args.items() if isinstance(t, list) and t and t[0] == "null"
        ]
        registry.register(self)

    # -- arguments ---------------------------------------------------------------------

    def encode_args(self, kwargs: Mapping[str, Any]) -> bytes:
        """Check ``kwargs`` against the job's argument record and encode them.

        Raises ``TypeError`` (``SchemaMismatch``) naming the job, the argument, the type
        and the reason: a missing or unknown argument, a model object, a set, ...
        """
        if not isinstance(kwargs, Mapping):
            raise TypeError(f"job {self.name!r}: kwargs must be a mapping, got {type(kwargs)}")
        full = {a: None for a in self._optional} | dict(kwargs)
        return _CODEC.encode(self.subject, full)

    def decode_args(self, data: bytes) -> dict[str, Any]:
        value = _CODEC.decode(self.subject, data)
        assert isinstance(value, dict)
        return value

    def run_record(
        self, kwargs: Mapping[str, Any], *, job_id: str | None = None, parent_id: str | None = None
    ) -> dict[str, Any]:
        """The ``jobs`` record of one run (arguments checked and encoded)."""
        return {
            "job": self.name,
            "job_id": job_id or uuid.uuid4().hex,
            "attempt": 1,
            "args": self.encode_args(kwargs),
            "parent_id": parent_id,
        }

    # -- sending -----------------------------------------------------------------------

    def delay(self, **kwargs: Any) -> Delivered:
        """Run the job now (as soon as a worker gets it); returns once the broker has it."""
        from streams.client import get_publisher

        rec = self.run_record(kwargs)
        return get_publisher().publish("jobs", rec, key=rec["job_id"])

    def apply_async(
        self,
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: dt.datetime | None = None,
        conn: psycopg.Connection[Any] | None = None,
        job_id: str | None = None,
    ) -> Delivered | Scheduled:
        """Run the job ``countdown`` s from now, at ``eta``, or after ``conn`` commits.

        Arguments are checked first (``TypeError``); with ``conn`` nothing is sent
        unless that transaction commits. ``job_id`` (optional) makes the call
        idempotent for delayed and transactional runs: a second call with the same id
        schedules nothing.
        """
        from streams.client import get_publisher

        delay_seconds(countdown, eta)  # bounds first: nothing is encoded for a bad delay
        rec = self.run_record(kwargs or {}, job_id=job_id)
        publisher = get_publisher()
        if countdown is None and eta is None and conn is None:
            return publisher.publish("jobs", rec, key=rec["job_id"])
        return publisher.schedule(
            "jobs",
            rec,
            key=rec["job_id"],
            countdown=countdown,
            eta=eta,
            conn=conn,
            dedupe_id=f"job:{job_id}" if job_id else None,
        )

    async def adelay(self, **kwargs: Any) -> Delivered:
        """``delay`` for asyncio code: awaits the broker's acknowledgement."""
        from streams.client import get_publisher

        rec = self.run_record(kwargs)
        return await get_publisher().publish_async("jobs", rec, key=rec["job_id"])

    async def aapply_async(
        self,
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: dt.datetime | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
        job_id: str | None = None,
    ) -> Delivered | Scheduled:
        """``apply_async`` for asyncio code (``conn`` is an ``AsyncConnection``)."""
        from streams.client import get_publisher

        delay = delay_seconds(countdown, eta)
        rec = self.run_record(kwargs or {}, job_id=job_id)
        publisher = get_publisher()
        dedupe = f"job:{job_id}" if job_id else None
        if conn is not None:
            msg = publisher.prepare("jobs", rec, key=rec["job_id"])
            return await insert_async(conn, msg, delay, dedupe)
        if countdown is None and eta is None:
            return await publisher.publish_async("jobs", rec, key=rec["job_id"])
        return await publisher.schedule_async(
            "jobs", rec, key=rec["job_id"], countdown=countdown, eta=eta, dedupe_id=dedupe
        )

    # -- running -----------------------------------------------------------------------

    async def call(self, ctx: JobContext, kwargs: Mapping[str, Any]) -> None:
        """Run the handler once (a plain function runs in a thread)."""
        if inspect.iscoroutinefunction(self.handler):
            await self.handler(ctx, **kwargs)
        else:
            await asyncio.to_thread(self.handler, ctx, **kwargs)


def job(
    name: str,
    *,
    args: Mapping[str, Any],
    silos: frozenset[SiloMode] = ALL_SILOS,
    retry: RetryLike | None = None,
    deadline: float | None = 60.0,
    version: int = 1,
) -> Callable[[Handler], Job]:
    """Declare a job: ``args`` maps each argument to its Avro type (``"long"``,
    ``"string"``, ``["null", "string"]`` for an optional one, records, arrays, ...).

    The handler is called as ``handler(ctx, **args)`` (async, or a plain function run
    in a thread); ``ctx.schedule(other_job, kwargs, countdown=...)`` adds a follow-on
    that is sent only if this run succeeds. ``retry`` (``RetryPolicy``) decides how
    often a failing run is retried and after how long; ``deadline`` bounds each run.
    """

    def declare(handler: Handler) -> Job:
        qual = f"{getattr(handler, '__module__', '?')}.{getattr(handler, '__qualname__', '?')}"
        return Job(
            name,
            handler,
            dict(args),
            silos=silos,
            retry=retry,
            deadline=deadline,
            version=version,
            qualname=qual,
        )

    return declare
