"""``RetryPolicy.decide``: after a failed attempt, retry (after a delay), dead-letter, or ignore.

The decision is a value, so it is tested without running anything (the model is
taskbroker's ``Retry.should_retry``). Every agent's retries go through it, and so do
the invalidation timer's recompute retries.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.dlq.headers import Failure, FailureReason
from streams.errors import DeadlineExceeded, DecodeError, PermanentFailure, RetryLater


@dataclass(frozen=True)
class Retry:
    """Try again after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True)
class DeadLetter:
    """Give up: send the message to the dead-letter topic for ``failure``."""

    failure: Failure


@dataclass(frozen=True)
class Ignore:
    """Nothing to do: the message counts as handled."""


Decision = Retry | DeadLetter | Ignore


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a failing handler before dead-lettering."""

    times: int = 3  # retries after the first attempt
    delay: float = 0.5
    backoff: float = 2.0
    max_delay: float = 30.0
    on: tuple[type[BaseException], ...] = (Exception,)  # worth retrying
    # Exceptions that mean "nothing to do": the message counts as handled.
    ignore: tuple[type[BaseException], ...] = ()

    def delay_for(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1 = the first retry)."""
        return float(min(self.max_delay, self.delay * (self.backoff ** max(0, retry - 1))))

    def decide(self, exc: BaseException, attempt: int) -> Decision:
        """What to do after attempt number ``attempt`` (1 = the first) raised ``exc``.

        ``ignore`` types: ignore. ``PermanentFailure``, ``DecodeError`` and types not in
        ``on``: dead-letter now. Otherwise retry while ``attempt <= times`` (a
        ``RetryLater`` may name its delay), then dead-letter with the reason
        ``deadline``, ``retry_exhausted`` or ``handler``.
        """
        if isinstance(exc, self.ignore):
            return Ignore()
        if isinstance(exc, PermanentFailure):
            return DeadLetter(Failure.of(FailureReason.PERMANENT, exc))
        if isinstance(exc, DecodeError):
            return DeadLetter(Failure.of(FailureReason.DECODE, exc))
        if not isinstance(exc, self.on):
            return DeadLetter(Failure.of(FailureReason.HANDLER, exc))
        if attempt > self.times:
            return DeadLetter(Failure.of(_exhausted(exc), exc))
        if isinstance(exc, RetryLater) and exc.delay is not None:
            return Retry(exc.delay)
        return Retry(self.delay_for(attempt))


def _exhausted(exc: BaseException) -> FailureReason:
    if isinstance(exc, DeadlineExceeded | TimeoutError):
        return FailureReason.DEADLINE
    if isinstance(exc, RetryLater):
        return FailureReason.RETRY_EXHAUSTED
    return FailureReason.HANDLER
