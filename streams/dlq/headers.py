"""The dead-letter contract: why a message failed and the ``dlq.*`` headers saying so.

A dead letter is the original value, key and headers, plus the headers below. This
module is the only place that builds them; the relay, every agent and ``streams dlq``
read and write them through it.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

PREFIX = "dlq."
H_REASON = "dlq.reason"
H_ERROR_TYPE = "dlq.error_type"
H_ERROR_MESSAGE = "dlq.error_message"
H_SOURCE_TOPIC = "dlq.source_topic"
H_SOURCE_PARTITION = "dlq.source_partition"
H_SOURCE_OFFSET = "dlq.source_offset"
H_AGENT = "dlq.agent"
H_FAILED_AT = "dlq.failed_at"
H_TRUNCATED = "dlq.truncated"

MAX_MESSAGE = 2000  # characters of the error message kept in its header

HeaderItems = Sequence[tuple[str, bytes]] | Mapping[str, bytes]

_HTTP = re.compile(r"http_[1-5][0-9][0-9]")


class FailureReason(enum.StrEnum):
    """Why a message was dead-lettered: the ``dlq.reason`` header and the metric label.

    Besides the members, ``http_<status>`` (a webhook receiver's final HTTP answer)
    is a valid reason: ``FailureReason.http(404)``. Anything else raises ValueError.
    """

    DECODE = "decode"  # bytes that do not decode (framing, fingerprint, body, no key)
    SCHEMA = "schema"
    HANDLER = "handler"  # the handler raised on every attempt
    DEADLINE = "deadline"  # the handler exceeded its deadline on every attempt
    PERMANENT = "permanent"  # PermanentFailure: retrying cannot help
    RETRY_EXHAUSTED = "retry_exhausted"  # RetryLater on every attempt
    INSTANCE_MISSING = "instance_missing"  # resource changes: the row never became visible
    UNKNOWN_SENDER = "unknown_sender"  # resource changes: a sender not allow-listed
    RECOMPUTE = "recompute"  # config invalidation: the recompute kept failing
    ENCODE = "encode"  # relay: the outbox row cannot be routed or encoded
    PRODUCE = "produce"  # relay: the producer refused the message
    SSRF = "ssrf"  # webhooks: the target address is forbidden
    TIMEOUT = "timeout"  # webhooks: the receiver did not answer in time
    CONNECTION_ERROR = "connection_error"  # webhooks: no connection to the receiver

    @classmethod
    def http(cls, status: int) -> FailureReason:
        """The reason for a final HTTP answer ``status`` (e.g. ``http_410``)."""
        return cls(f"http_{status}")

    @classmethod
    def _missing_(cls, value: object) -> FailureReason | None:
        # HTTP statuses are a bounded set (100-599) yet too many to list: made on demand.
        if not isinstance(value, str) or not _HTTP.fullmatch(value):
            return None
        member = str.__new__(cls, value)
        member._name_ = value.upper()
        member._value_ = value
        return cls._value2member_map_.setdefault(value, member)  # type: ignore[return-value]


@dataclass(frozen=True)
class Failure:
    """Why a message failed for good."""

    reason: FailureReason
    error_type: str
    message: str

    @classmethod
    def of(cls, reason: FailureReason, exc: BaseException) -> Failure:
        """The failure ``reason`` caused by ``exc`` (its type name and message)."""
        return cls(reason, type(exc).__name__, str(exc) or repr(exc))


@dataclass(frozen=True)
class Letter:
    """One message on its way to the dead-letter topic.

    ``source`` is the full topic the message was consumed from (for the relay, the
    outbox table), ``offset`` its offset there (for the relay, the outbox id).
    """

    value: bytes | None
    key: bytes | None
    headers: HeaderItems
    failure: Failure
    source: str
    partition: int
    offset: int
    agent: str
    truncated: bool = False  # the value was cut to fit a message

    def wire_headers(self, now_ms: int | None = None) -> list[tuple[str, bytes]]:
        """The original headers (minus stale ``dlq.*`` ones) plus this letter's."""
        items: Iterable[tuple[str, bytes]] = (
            self.headers.items() if isinstance(self.headers, Mapping) else self.headers
        )
        f = self.failure
        failed_at = now_ms if now_ms is not None else int(time.time() * 1000)
        out = [(k, v) for k, v in items if not k.startswith(PREFIX)]
        if self.truncated:
            out.append((H_TRUNCATED, b"1"))
        out += [
            (H_REASON, f.reason.value.encode()),
            (H_ERROR_TYPE, f.error_type.encode()),
            (H_ERROR_MESSAGE, f.message[:MAX_MESSAGE].encode("utf-8", "replace")),
            (H_SOURCE_TOPIC, self.source.encode()),
            (H_SOURCE_PARTITION, str(self.partition).encode()),
            (H_SOURCE_OFFSET, str(self.offset).encode()),
            (H_AGENT, self.agent.encode()),
            (H_FAILED_AT, str(failed_at).encode()),
        ]
        return out


def original_headers(headers: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """A dead letter's headers without the ``dlq.*`` ones (what its replay carries)."""
    return [(k, v) for k, v in headers if not k.startswith(PREFIX)]
