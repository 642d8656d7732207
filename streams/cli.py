"""The ``streams`` command line."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from streams import logs
from streams.backfill.command import add_parser as add_backfill_parser
from streams.errors import ConfigurationError, StreamsError
from streams.heap import freeze_startup_heap
from streams.settings import Settings, help_default, read
from streams.settings_parse import LOG_LEVELS


def _state_dir() -> Path:
    state: Path = read("state_dir")
    return state


def _settings() -> Settings:
    from streams.settings import get_settings

    return get_settings()


def cmd_dev(args: argparse.Namespace) -> int:
    from streams.dev import stack

    state = _state_dir()
    if args.action == "start":
        info = stack.start(state, detach=True)
        print(_masked("\n".join(info.exports())))
        return 0
    if args.action == "stop":
        info = stack.stop(state)
        print(f"stopped broker pid={info.broker_pid} postgres pid={info.postgres_pid}")
        return 0
    info = stack.read_stack(state)
    broker = info.broker_pid and stack.pid_alive(info.broker_pid)
    pg = info.postgres_pid and stack.pid_alive(info.postgres_pid)
    print(f"broker:   {'running' if broker else 'stopped'} {info.kafka_bootstrap_servers or ''}")
    print(_masked(f"postgres: {'running' if pg else 'stopped'} {info.database_url or ''}"))
    if broker or pg:
        print(_masked("\n".join(info.exports())))
    return 0 if (broker and pg) else 3


def _masked(text: str) -> str:
    """``text`` without DSN passwords (a ``DATABASE_URL`` from the environment has one; the
    embedded server's has none, so its export lines stay usable)."""
    return logs.redact(text, logs.env_secrets())


def cmd_db(args: argparse.Namespace) -> int:
    from streams.db.migrate import migrate

    applied = migrate(_settings().database_url.get())
    for m in applied:
        print(f"applied {m.version:04d}_{m.name}")
    print(f"database is up to date ({len(applied)} applied now)")
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from streams import topics

    settings = _settings()
    if args.action == "create":
        created = topics.create_all(settings)
        print(f"created {len(created)} topics" + (": " + ", ".join(created) if created else ""))
        return 0
    for t in topics.list_state(settings):
        print(f"{t.name:40} {'present' if t.exists else 'MISSING':8} partitions={t.partitions}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import faust

    from streams import topics
    from streams.app import create_app

    settings = _settings()
    topics.create_all(settings)
    app = create_app(settings)
    level = args.loglevel or settings.log_level
    worker = faust.Worker(
        app, loglevel=level, logging_config=logs.dict_config(level, settings.log_format)
    )
    freeze_startup_heap(settings.gc_thresholds)
    worker.execute_from_commandline()
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    from streams.relay.relay import run_relay

    settings = _settings()
    freeze_startup_heap(settings.gc_thresholds)
    return run_relay(settings, concurrency=args.concurrency)


def cmd_dlq(args: argparse.Namespace) -> int:
    from streams.dlq import outbox
    from streams.dlq import replay as dlq

    settings = _settings()
    if args.action == "list":
        n = 0
        for letter in dlq.read(settings, source_topic=args.topic):
            n += 1
            key = letter.key.decode("utf-8", "replace") if letter.key else ""
            print(
                f"{letter.partition}:{letter.offset} {letter.source_topic} key={key!r} "
                f"reason={letter.reason} {letter.header('dlq.error_type')}: "
                f"{letter.header('dlq.error_message')[:200]}"
            )
        for line in outbox.dead_row_lines(settings, args.topic):
            n += 1
            print(line)
        print(f"{n} dead letters")
        return 0
    since = dt.datetime.fromisoformat(args.since) if args.since else None
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    if args.to_outbox:
        return _replay_to_outbox(args, settings, since)
    if not args.topic:
        print("streams: dlq replay needs --topic (or --to-outbox)", file=sys.stderr)
        return 2
    outbox.check_topic(settings, args.topic)
    count = dlq.replay(
        settings,
        source_topic=args.topic,
        since=since,
        reason=args.reason,
        key=args.key.encode() if args.key else None,
    )
    print(f"replayed {count} dead letters to {args.topic}")
    return 0


def _replay_to_outbox(
    args: argparse.Namespace, settings: Settings, since: dt.datetime | None
) -> int:
    from streams.dlq.outbox import replay_to_outbox

    put_back, skipped = replay_to_outbox(
        settings,
        table=args.topic,
        since=since,
        reason=args.reason,
        key=args.key.encode() if args.key else None,
    )
    print(f"put {put_back} relay dead letters back into their outbox table")
    if skipped:
        print(f"streams: {skipped} skipped: their row was cut to fit a message", file=sys.stderr)
        return 1
    return 0


def cmd_lag_exporter(args: argparse.Namespace) -> int:
    from streams.lag import exporter

    opts = exporter.options_from(
        _settings(),
        host=args.host,
        port=args.port,
        interval=args.interval,
        groups=args.groups,
        cluster=args.cluster_name,
        timeout=args.timeout,
    )
    if args.once:
        print(exporter.render_once(_settings(), opts), end="")
        return 0
    exporter.serve(_settings(), opts, on_ready=lambda url: print(f"serving {url}", flush=True))
    return 0


def cmd_invalidate(args: argparse.Namespace) -> int:
    from streams.client import schedule_invalidate_project_config

    missing = _unknown_scope(args)
    if missing and not args.force:
        print(f"streams: {missing}; nothing requested (--force to request anyway)", file=sys.stderr)
        return 1
    delivered = schedule_invalidate_project_config(
        trigger=args.trigger,
        organization_id=args.organization_id,
        project_id=args.project_id,
        public_key=args.public_key,
        countdown=args.countdown,
    )
    print(f"requested: {delivered.topic} partition {delivered.partition} offset {delivered.offset}")
    return 0


_SCOPE_SQL = {
    "organization": "SELECT 1 FROM organization WHERE id = %s",
    "project": "SELECT 1 FROM project WHERE id = %s",
    "key": "SELECT 1 FROM project_key WHERE public_key = %s",
}


def _unknown_scope(args: argparse.Namespace) -> str | None:
    """``no project 7 in the database`` when the scope names nothing, else ``None``."""
    from streams.db.pool import connect

    kind, value = (
        ("organization", args.organization_id)
        if args.organization_id is not None
        else ("project", args.project_id)
        if args.project_id is not None
        else ("key", args.public_key)
    )
    with connect(_settings()) as conn:
        if conn.execute(_SCOPE_SQL[kind].encode(), (value,)).fetchone():
            return None
    return f"no {kind} {value} in the database"


def _port(text: str) -> int:
    """A TCP port for an option (0 = any free port)."""
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0-65535)")
    return port


def _add_invalidate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    inv = sub.add_parser("invalidate", help="recompute the project configs of one scope")
    scope = inv.add_mutually_exclusive_group(required=True)
    scope.add_argument("--organization-id", type=int, help="every key of an organization")
    scope.add_argument("--project-id", type=int, help="every key of a project")
    scope.add_argument("--public-key", help="one key")
    inv.add_argument("--trigger", default="cli", help="label for the metrics (default cli)")
    inv.add_argument("--countdown", type=float, default=5.0, help="seconds to wait (default 5)")
    inv.add_argument(
        "--force", action="store_true", help="request even if the scope is not in the database"
    )
    inv.set_defaults(func=cmd_invalidate, needs=BOTH)


def cmd_schedules(args: argparse.Namespace) -> int:
    from streams.db.pool import connect
    from streams.schedules.listing import render, rows
    from streams.schedules.model import CatchUp
    from streams.schedules.modules import load

    settings = _settings()
    catch_up, grace = CatchUp(settings.schedule_catch_up), settings.schedule_grace
    declared = [s.with_defaults(catch_up, grace) for s in load(settings)]
    with connect(settings) as conn:
        print(render(rows(conn, declared)))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from streams.up import run

    code: int = run(demo=not args.no_demo, duration=args.duration)
    return code


# What each command must reach before it starts (``streams.preflight``).
KAFKA, DB, BOTH = ("kafka",), ("database",), ("kafka", "database")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="streams",
        description="streams: Kafka stream processing that replaces a Celery task system "
        "(outbox relay, Faust agents, delayed jobs and schedules). Every command checks its "
        "broker and database first and fails with one line.",
    )
    p.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        help=f"{help_default('log_level')}; `up`: WARNING",
    )
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="the whole pipeline in the foreground (what `make run` calls)")
    up.add_argument("--no-demo", action="store_true", help="no demo workload")
    up.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    up.set_defaults(func=cmd_up)

    dev = sub.add_parser("dev", help="embedded broker + PostgreSQL in the background")
    dev.add_argument("action", choices=["start", "stop", "status"])
    dev.set_defaults(func=cmd_dev)

    db = sub.add_parser("db", help="database")
    db.add_argument("action", choices=["migrate"])
    db.set_defaults(func=cmd_db, needs=DB)

    topics = sub.add_parser("topics", help="the topic catalogue on the cluster")
    topics.add_argument("action", choices=["create", "list"])
    topics.set_defaults(func=cmd_topics, needs=KAFKA)

    worker = sub.add_parser("worker", help="run every agent of this silo (a Faust worker)")
    worker.add_argument(
        "--loglevel", type=str.upper, choices=LOG_LEVELS, help=help_default("log_level")
    )
    worker.set_defaults(func=cmd_worker, needs=BOTH)

    relay = sub.add_parser("relay", help="publish committed outbox rows to Kafka")
    relay.add_argument(
        "--concurrency",
        type=int,
        help=f"worker processes, each a set of shards ({help_default('relay_concurrency')})",
    )
    relay.set_defaults(func=cmd_relay, needs=BOTH)
    add_backfill_parser(sub)

    dlq = sub.add_parser("dlq", help="the dead-letter topic")
    dlq.add_argument("action", choices=["list", "replay"])
    dlq.add_argument("--topic", help="only dead letters from this source topic")
    dlq.add_argument("--since", help="replay only those dead-lettered at or after (ISO time)")
    dlq.add_argument("--reason", help="replay only this failure reason (e.g. retry_exhausted)")
    dlq.add_argument("--key", help="replay only dead letters with this message key")
    dlq.add_argument(
        "--to-outbox",
        action="store_true",
        help="relay dead letters (source region_outbox / control_outbox): insert the rows "
        "back into their outbox table",
    )
    dlq.set_defaults(func=cmd_dlq, needs=BOTH)

    lag = sub.add_parser("lag-exporter", help="Prometheus exporter of consumer-group lag")
    lag.add_argument("--host", help=f"bind address ({help_default('web_host')})")
    lag.add_argument("--port", type=_port, help=f"HTTP port ({help_default('lag_exporter_port')})")
    lag.add_argument(
        "--interval",
        type=float,
        help=f"seconds between polls of the cluster ({help_default('lag_exporter_interval')})",
    )
    lag.add_argument(
        "--groups",
        help=f"only consumer groups matching this regex ({help_default('lag_exporter_groups')})",
    )
    lag.add_argument(
        "--cluster-name",
        help=f"value of the cluster_name label ({help_default('lag_exporter_cluster')})",
    )
    lag.add_argument("--timeout", type=float, help="per-request timeout talking to the broker")
    lag.add_argument("--once", action="store_true", help="poll once, print the metrics, exit")
    lag.set_defaults(func=cmd_lag_exporter, needs=KAFKA)

    _add_invalidate_parser(sub)

    schedules = sub.add_parser("schedules", help="periodic schedules: next and last run")
    schedules.add_argument("action", choices=["list"])
    schedules.set_defaults(func=cmd_schedules, needs=DB)
    return p


def _log_level(args: argparse.Namespace) -> str:
    if args.log_level:
        return str(args.log_level).upper()
    if args.command == "up" and not os.environ.get("STREAMS_LOG_LEVEL"):
        return "WARNING"  # `up` prints its own progress; keep the console readable
    level: str = read("log_level")
    return level


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from streams.preflight import PortBusy, Refused, Unreachable

    try:
        logs.configure(_log_level(args), read("log_format"))
        _preflight(args)
        code: int = args.func(args)
    except (ConfigurationError, Unreachable, PortBusy, Refused) as exc:
        # Exit 2: the command could not start (settings, addresses, ports), as usage errors.
        print(f"streams: {_masked(str(exc))}", file=sys.stderr)
        return 2
    except StreamsError as exc:
        print(f"streams: {_masked(str(exc))}", file=sys.stderr)
        return 1
    return code


def _preflight(args: argparse.Namespace) -> None:
    """Validate every setting, then reach the broker and the database within seconds."""
    needs = getattr(args, "needs", ())
    if not needs:
        return
    from streams import preflight

    settings = _settings()
    preflight.check(settings, kafka="kafka" in needs, database="database" in needs)
    if args.command == "relay":
        preflight.check_port_free(
            settings.web_host, settings.metrics_port, "STREAMS_METRICS_PORT", "the relay's /metrics"
        )


if __name__ == "__main__":
    sys.exit(main())
