"""The outbox part of ``streams up``: a demo workload writing outbox rows, and a status."""

from __future__ import annotations

import logging
import re
import threading
import urllib.request

import psycopg

from streams.outbox.categories import OutboxCategory, OutboxScope
from streams.outbox.write import enqueue_outbox
from streams.settings import Settings

log = logging.getLogger(__name__)

DEMO_ORGS = 3


def write_outbox_rows(settings: Settings, stop: threading.Event, interval: float = 1.0) -> None:
    """Every ``interval`` s, rename a demo organization and enqueue its outbox row."""
    n = 0
    while not stop.is_set():
        try:
            with psycopg.connect(settings.database_url.get()) as conn:
                while not stop.wait(interval):
                    n += 1
                    _one_change(conn, n)
        except psycopg.Error as exc:
            log.warning("relay.demo.failed", extra={"error": repr(exc)})
            stop.wait(5.0)


def _one_change(conn: psycopg.Connection[tuple[object, ...]], n: int) -> None:
    slug = f"demo-org-{n % DEMO_ORGS}"
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO organization (slug, name) VALUES (%s, %s) ON CONFLICT (slug)"
            " DO UPDATE SET name = EXCLUDED.name RETURNING id",
            (slug, f"Demo organization, change {n}"),
        ).fetchone()
        assert row is not None
        org_id = int(str(row[0]))
        enqueue_outbox(
            conn,
            scope=OutboxScope.ORGANIZATION,
            shard_identifier=org_id,
            category=OutboxCategory.ORGANIZATION_UPDATE,
            object_identifier=org_id,
            payload={"name": f"Demo organization, change {n}"},
        )


def metrics_url(settings: Settings) -> str:
    return f"http://{settings.web_host}:{settings.metrics_port}/metrics"


def _published(settings: Settings) -> str:
    """Rows the relay has published, from its own /metrics ("?" if it does not answer)."""
    try:
        with urllib.request.urlopen(metrics_url(settings), timeout=1) as resp:
            text = resp.read().decode()
    except OSError:
        return "?"
    found = re.findall(r"^streams_relay_rows_published_total\{[^}]*\} (\S+)$", text, re.M)
    return str(int(sum(float(v) for v in found)))


def status(settings: Settings) -> str:
    """``outbox=<rows waiting> queued/<rows published> published``."""
    with psycopg.connect(settings.database_url.get(), connect_timeout=2) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM region_outbox) + (SELECT count(*) FROM control_outbox)"
        ).fetchone()
    queued = row[0] if row else "?"
    return f"outbox={queued} queued/{_published(settings)} published"
