"""Five-field crontab expressions (minute hour day-of-month month day-of-week), in UTC.

Each field takes ``*``, numbers, ranges ``a-b``, lists ``a,b`` and steps ``*/n`` /
``a-b/n``; months and weekdays also take names (``jan``, ``mon``); weekday 7 is Sunday
like 0. As in cron, when both day fields are restricted a day matches either of them.
``next_after`` / ``latest_at_or_before`` walk days, then hours, then minutes, so a
weekly expression costs a few hundred steps, not ten thousand.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from streams.errors import ConfigurationError

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (low, high, names) per field, in expression order.
_FIELDS: tuple[tuple[int, int, list[str] | None], ...] = (
    (0, 59, None),
    (0, 23, None),
    (1, 31, None),
    (1, 12, _MONTHS),
    (0, 7, _DAYS),
)
_SEARCH_DAYS = 366 * 5  # a valid expression matches within 5 years (Feb 29 needs 4)
UTC = dt.UTC


class CrontabError(ConfigurationError):
    """A crontab expression that cannot be parsed or never matches."""


def _value(token: str, low: int, names: list[str] | None) -> int:
    if names is not None and token.lower() in names:
        return names.index(token.lower()) + (1 if low == 1 else 0)
    if not token.isdigit():
        raise CrontabError(f"{token!r} is not a number")
    return int(token)


def _parse_field(text: str, low: int, high: int, names: list[str] | None) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() else 1
        if step_text and (not step_text.isdigit() or step < 1):
            raise CrontabError(f"bad step in {part!r}")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = _value(a, low, names), _value(b, low, names)
        else:
            start = _value(base, low, names)
            end = high if step_text else start
        if not low <= start <= end <= high:
            raise CrontabError(f"{part!r} is outside {low}-{high} or reversed")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Crontab:
    """A parsed expression; ``str()`` gives the original text."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Monday, as ``date.weekday()``
    day_star: bool
    weekday_star: bool

    @classmethod
    def parse(cls, text: str) -> Crontab:
        """Parse ``text``; ``CrontabError`` (a ``ConfigurationError``) if it is invalid."""
        parts = text.split()
        if len(parts) != 5:
            raise CrontabError(f"crontab {text!r} needs 5 fields, got {len(parts)}")
        try:
            m, h, d, mo, wd = (
                _parse_field(p, lo, hi, names)
                for p, (lo, hi, names) in zip(parts, _FIELDS, strict=True)
            )
        except CrontabError as exc:
            raise CrontabError(f"crontab {text!r}: {exc}") from None
        cron_days = {7 if v == 0 else v for v in wd}  # cron: 0/7 = Sunday, 1 = Monday
        tab = cls(
            text,
            tuple(sorted(m)),
            tuple(sorted(h)),
            d,
            mo,
            frozenset(v - 1 for v in cron_days),
            parts[2] == "*",
            parts[4] == "*",
        )
        if tab.next_after(dt.datetime(2000, 1, 1, tzinfo=UTC)) is None:
            raise CrontabError(f"crontab {text!r} never matches")
        return tab

    def __str__(self) -> str:
        return self.text

    def _day_matches(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = day.weekday() in self.weekdays
        if self.day_star or self.weekday_star:
            return in_days and in_weekdays
        return in_days or in_weekdays

    def _times(self, reverse: bool) -> Iterator[tuple[int, int]]:
        hours = reversed(self.hours) if reverse else self.hours
        for h in hours:
            for m in reversed(self.minutes) if reverse else self.minutes:
                yield h, m

    def next_after(self, t: dt.datetime) -> dt.datetime | None:
        """The first matching minute strictly after ``t`` (aware, UTC); None if never."""
        t = t.astimezone(UTC)
        day = t.date()
        for offset in range(_SEARCH_DAYS):
            d = day + dt.timedelta(days=offset)
            if not self._day_matches(d):
                continue
            for h, m in self._times(reverse=False):
                slot = dt.datetime(d.year, d.month, d.day, h, m, tzinfo=UTC)
                if slot > t:
                    return slot
        return None

    def latest_at_or_before(self, t: dt.datetime) -> dt.datetime | None:
        """The last matching minute at or before ``t``; None if none within 5 years."""
        t = t.astimezone(UTC)
        day = t.date()
        for offset in range(_SEARCH_DAYS):
            d = day - dt.timedelta(days=offset)
            if not self._day_matches(d):
                continue
            for h, m in self._times(reverse=True):
                slot = dt.datetime(d.year, d.month, d.day, h, m, tzinfo=UTC)
                if slot <= t:
                    return slot
        return None
