"""``streams backfill``: run (the only scheduler while it runs), ``status``, ``--reset``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from streams.preflight import Refused
from streams.settings import Settings, get_settings, help_default

if TYPE_CHECKING:
    from streams.backfill.models import OutboxProducingModel


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``backfill`` subcommand and its options."""
    p = sub.add_parser("backfill", help="re-emit outbox rows of outbox-producing tables")
    p.add_argument(
        "action",
        nargs="?",
        choices=["run", "status"],
        default="run",
        help="run (default): backfill to completion; status: where each table stands",
    )
    p.add_argument("--model", help="only this model (default: every model of the silo)")
    p.add_argument(
        "--rate",
        type=int,
        help=f"rows per minute, 0 = no limit; the only rate while this runs (workers yield) "
        f"({help_default('backfill_max_rate')})",
    )
    p.add_argument(
        "--synchronous", action="store_true", help="process batches here, not in a worker"
    )
    p.add_argument(
        "--reset", action="store_true", help="rewind --model so its next run re-emits every row"
    )
    p.add_argument("--yes", action="store_true", help="--reset without asking")
    p.set_defaults(func=run_command, needs=("kafka", "database"))


def run_command(args: argparse.Namespace) -> int:
    """``streams backfill ...``; returns the exit code."""
    from streams.backfill import models

    settings = get_settings()
    if args.reset:
        return _reset(args, settings)
    chosen = [models.model(args.model)] if args.model else models.for_silo(settings.silo_mode)
    if args.action == "status":
        return asyncio.run(_status(settings, chosen))
    from streams.backfill.run import run

    rate = settings.backfill_max_rate if args.rate is None else args.rate
    asyncio.run(run(settings, chosen, rate=rate, synchronous=args.synchronous))
    print(f"backfill complete: {', '.join(m.name for m in chosen)}")
    return 0


async def _status(settings: Settings, chosen: list[OutboxProducingModel]) -> int:
    import psycopg

    from streams.backfill import admin, lease

    async with await psycopg.AsyncConnection.connect(
        settings.database_url.get(), autocommit=True
    ) as conn:
        rows = await admin.status(conn, chosen)
        print(admin.render(rows, await lease.current(conn, settings.silo_mode)))
    return 0


def _confirmed(args: argparse.Namespace, what: str) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise Refused(f"backfill --reset {what}: confirm with --yes (stdin is not a terminal)")
    answer = input(f"Rewind {what}, so that every row of it is emitted again? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _reset(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from streams.backfill import admin, models

    if not args.model:
        raise Refused("backfill --reset needs --model (one table at a time)")
    model = models.model(args.model)
    if not _confirmed(args, f"the backfill of {model.name} ({model.table})"):
        print("nothing reset")
        return 1

    async def rewind() -> int:
        async with await psycopg.AsyncConnection.connect(
            settings.database_url.get(), autocommit=True
        ) as conn:
            return await admin.reset(conn, model, settings.silo_mode)

    rows = asyncio.run(rewind())
    print(
        f"reset {model.name}: its {rows:,} rows are emitted again by the next "
        "`streams backfill` (or the workers' timer)"
    )
    return 0
