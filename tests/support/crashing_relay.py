"""``streams relay`` that kills itself with SIGKILL between an acknowledged batch and its delete.

The kill -9 test (tests/relay/test_relay_processes.py) starts this script instead of
``streams relay``, so the product code carries no crash hook. The relay deletes a batch
only after the broker acknowledged every message of it; this wraps that delete, so the
process dies with the batch published and its rows still in the outbox, the window in
which a crash must lose nothing.

Usage: ``python -m tests.support.crashing_relay --after N [streams relay options]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from streams import cli
from streams.outbox.categories import OutboxTable
from streams.relay import claim


def kill_before_delete(after_batches: int) -> None:
    """Make the ``after_batches``-th non-empty delete SIGKILL this process instead."""
    original = claim.delete
    lock = threading.Lock()
    seen = 0

    def delete(conn: Any, table: OutboxTable, ids: Sequence[int]) -> int:
        nonlocal seen
        if ids:
            with lock:
                seen += 1
                if seen >= after_batches:
                    print(f"crashing_relay: kill -9 before deleting {len(ids)} rows", flush=True)
                    os.kill(os.getpid(), signal.SIGKILL)
        return original(conn, table, ids)

    # The drainer calls claim.delete through the module, so this reaches every thread.
    claim.delete = delete


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--after", type=int, default=1, help="acknowledged batches to allow")
    args, relay_args = parser.parse_known_args(argv)
    kill_before_delete(args.after)
    return cli.main(["relay", *relay_args])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
