"""``streams up`` demo workload and status line for project config invalidation."""

from __future__ import annotations

import logging
import random
import re
import threading
import urllib.request
from typing import cast

from streams.settings import Settings

log = logging.getLogger(__name__)

DEMO_ORG = "demo-configs"
DEMO_PROJECTS = 3


def _demo_projects(settings: Settings) -> list[int]:
    from streams.db.pool import connect

    with connect(settings) as conn:
        org = conn.execute(
            "INSERT INTO organization (slug, name) VALUES (%s, 'Configs demo') "
            "ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name RETURNING id",
            (DEMO_ORG,),
        ).fetchone()
        assert org is not None
        ids: list[int] = []
        for n in range(DEMO_PROJECTS):
            row = conn.execute(
                "INSERT INTO project (organization_id, slug, platform) VALUES (%s, %s, 'python') "
                "ON CONFLICT (organization_id, slug) DO UPDATE SET slug = EXCLUDED.slug "
                "RETURNING id",
                (org[0], f"app-{n}"),
            ).fetchone()
            assert row is not None
            ids.append(cast(int, row[0]))
            conn.execute(
                "INSERT INTO project_key (project_id, public_key) "
                "SELECT %s, md5(random()::text) WHERE NOT EXISTS "
                "(SELECT 1 FROM project_key WHERE project_id = %s)",
                (row[0], row[0]),
            )
        conn.commit()
    return ids


def _toggle_option(settings: Settings, project: int) -> None:
    from streams.db.pool import connect

    with connect(settings) as conn:
        conn.execute(
            "INSERT INTO project_option (project_id, key, value) VALUES (%s, 'sentry:scrub_data',"
            " 'true') ON CONFLICT (project_id, key) DO UPDATE SET value = to_jsonb("
            "NOT (project_option.value)::text::boolean)",
            (project,),
        )
        conn.commit()


def run_demo(settings: Settings, stop: threading.Event) -> None:
    """Every 2 s: flip an option of a demo project, then 20 invalidations (one recompute)."""
    from streams.client import schedule_invalidate_project_config

    try:
        projects = _demo_projects(settings)
    except Exception as exc:
        log.warning("invalidation.demo.failed", extra={"error": repr(exc)})
        return
    while not stop.wait(2.0):
        project = random.choice(projects)
        try:
            _toggle_option(settings, project)
            for _ in range(20):
                schedule_invalidate_project_config(
                    trigger="demo.option_changed",
                    project_id=project,
                    countdown=settings.invalidation_countdown,
                )
        except Exception as exc:
            log.warning("invalidation.demo.failed", extra={"error": repr(exc)})


def _metric_sum(text: str, name: str) -> float:
    return sum(
        float(m.group(1)) for m in re.finditer(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M)
    )


def status(settings: Settings) -> str:
    """``configs=<recomputes> recomputes/<skipped> skipped`` from the worker's metrics."""
    url = f"http://{settings.web_host}:{settings.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=0.5) as resp:
        text = resp.read().decode()
    recomputes = _metric_sum(text, "streams_invalidation_recomputes_total")
    skipped = _metric_sum(text, "streams_invalidation_skipped_total")
    return f"configs={recomputes:.0f} recomputes/{skipped:.0f} skipped"
