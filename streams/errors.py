"""One exception root for the project.

Errors that wrap a library's error also inherit from it, so callers can catch either.
"""

from __future__ import annotations


class StreamsError(Exception):
    """Root of every error raised by streams."""


class ConfigurationError(StreamsError, ValueError):
    """A setting is missing or does not parse."""


class SchemaMismatch(StreamsError, TypeError):
    """A value does not fit its topic's Avro schema (raised before anything is sent)."""

    def __init__(self, topic: str, path: str, value: object, reason: str) -> None:
        self.topic = topic
        self.path = path or "<root>"
        self.value_type = type(value).__name__
        self.reason = reason
        super().__init__(f"topic {topic!r}: field {self.path!r} got {self.value_type}: {reason}")


class DecodeError(StreamsError, ValueError):
    """Bytes on a topic could not be decoded (bad framing, unknown fingerprint, bad body)."""


class UnknownTopic(StreamsError, KeyError):
    """A topic name that is not in the catalogue."""


class WrongSilo(StreamsError, RuntimeError):
    """An operation was attempted from a silo that does not own it."""


class PublishError(StreamsError):
    """The broker did not acknowledge a message."""


class MessageTooLarge(StreamsError, ValueError):
    """A message larger than its topic accepts (``max.message.bytes``), refused before
    anything is sent or stored, so the caller can still react (nothing is truncated)."""


class RetryLater(StreamsError):
    """A handler asks for the message to be retried after a delay (e.g. row not yet visible)."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class PermanentFailure(StreamsError):
    """A handler says retrying cannot help: the message goes to the dead-letter topic now."""


class DeadlineExceeded(StreamsError, TimeoutError):
    """A handler ran past its agent's deadline (and was cancelled)."""

    def __init__(self, deadline: float) -> None:
        super().__init__(f"handler exceeded its {deadline}s deadline")
        self.deadline = deadline
