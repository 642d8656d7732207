"""The relay's publisher, replaced when librdkafka reports a fatal producer error.

An idempotent producer whose messages timed out (a broker outage) bumps its epoch; a
broker that answers by fencing it (the embedded one does: docs/broker.md #9) leaves the
producer failing every message for good. librdkafka's rule for fatal errors is to
build a new producer, which gets a new producer id; the relay does exactly that.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

from streams.errors import PublishError
from streams.publisher import Publisher

log = logging.getLogger(__name__)


class PublisherSlot:
    """Hands out the current publisher; ``renew`` swaps a broken one (once per breakage).

    ``lazy`` builds the first publisher only when it is first asked for (the relay's
    dead-letter publisher: most relays never need one).
    """

    def __init__(
        self,
        factory: Callable[[], Publisher],
        publisher: Publisher | None = None,
        *,
        lazy: bool = False,
    ):
        self._factory = factory
        self._current = publisher if publisher is not None or lazy else factory()
        self._lock = threading.Lock()
        self.renewals = 0

    def get(self) -> Publisher:
        current = self._current
        if current is None:
            with self._lock:
                if self._current is None:
                    self._current = self._factory()
                current = self._current
        return current

    def renew(self, broken: Publisher) -> None:
        """Replace ``broken`` with a new publisher, unless another thread already did."""
        with self._lock:
            if self._current is not broken:
                return
            self._current = self._factory()
            self.renewals += 1
        log.warning("relay.producer.renewed", extra={"renewals": self.renewals})
        # Its remaining messages fail fast (fatal state); do not wait long for them.
        threading.Thread(target=_close, args=(broken, 2.0), daemon=True).start()

    def close(self, timeout: float = 10.0) -> None:
        if self._current is not None:
            _close(self._current, timeout)


def _close(publisher: Publisher, timeout: float) -> None:
    with contextlib.suppress(PublishError):
        publisher.close(timeout)
