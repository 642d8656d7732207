"""When a delayed message is due: ``countdown`` / ``eta`` checked against declared bounds."""

from __future__ import annotations

import datetime as dt
import math

# Declared limits (README): a delay of up to 30 days is accepted; an ``eta`` up to this
# far in the past is taken as "now" (clock skew, slow callers), anything older is refused.
MAX_DELAY = dt.timedelta(days=30)
PAST_TOLERANCE = dt.timedelta(seconds=60)


def delay_seconds(
    countdown: float | None, eta: dt.datetime | None, *, now: dt.datetime | None = None
) -> float:
    """Seconds from now until the message is due (0 = after commit / as soon as possible).

    ``TypeError`` for both given, a non-number countdown or a naive ``eta``;
    ``ValueError`` for a negative or non-finite countdown, a delay beyond ``MAX_DELAY``,
    or an ``eta`` more than ``PAST_TOLERANCE`` in the past.
    """
    if countdown is not None and eta is not None:
        raise TypeError("give countdown or eta, not both")
    if eta is not None:
        return _eta_seconds(eta, now or dt.datetime.now(dt.UTC))
    if countdown is None:
        return 0.0
    if isinstance(countdown, bool) or not isinstance(countdown, int | float):
        raise TypeError(f"countdown must be a number of seconds, got {type(countdown).__name__}")
    if not math.isfinite(countdown) or countdown < 0:
        raise ValueError(f"countdown must be a finite number >= 0, got {countdown!r}")
    if countdown > MAX_DELAY.total_seconds():
        raise ValueError(
            f"countdown {countdown:.0f}s exceeds the maximum delay of "
            f"{MAX_DELAY.total_seconds():.0f}s ({MAX_DELAY.days} days)"
        )
    return float(countdown)


def _eta_seconds(eta: dt.datetime, now: dt.datetime) -> float:
    if not isinstance(eta, dt.datetime):
        raise TypeError(f"eta must be a datetime, got {type(eta).__name__}")
    if eta.tzinfo is None or eta.utcoffset() is None:
        raise TypeError("eta must be timezone-aware (e.g. datetime.now(UTC) + timedelta(...))")
    ahead = eta - now
    if ahead < -PAST_TOLERANCE:
        raise ValueError(
            f"eta {eta.isoformat()} is {-ahead.total_seconds():.0f}s in the past; at most "
            f"{PAST_TOLERANCE.total_seconds():.0f}s in the past is accepted"
        )
    if ahead > MAX_DELAY:
        raise ValueError(
            f"eta {eta.isoformat()} is beyond the maximum delay of {MAX_DELAY.days} days"
        )
    return max(0.0, ahead.total_seconds())
