"""The console in a real headless Chromium against a real worker, broker and PostgreSQL.

A resource change whose issue row does not exist yet is dead-lettered
(``instance_missing``). The test signs in with the console token, sees the agents on
the status page, finds the dead letter, creates the missing row, clicks Replay, and
sees the webhook arrive and the letter marked replayed. With
``STREAMS_UPDATE_SCREENSHOT=1`` it writes the status page to ``docs/console.png``.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

from streams import client
from streams.projectconfigs.scopes import DatabaseScopeResolver
from streams.publisher import Publisher
from streams.settings import Settings
from tests.projectconfigs.support import seed
from tests.support import harness
from tests.support.webhooks import Receiver, Rows

playwright_api = pytest.importorskip("playwright.sync_api")
if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "console-s3cret"
SCREENSHOT = harness.ROOT / "docs" / "console.png"
WORKER_ENV = {
    "STREAMS_AGENTS": "resource_changes,webhook_delivery,invalidation,project_configs",
    "STREAMS_INVALIDATION_COUNTDOWN": "0.5",
    "STREAMS_CONSUMER_FETCH_MAX_WAIT": "0.1",
    "STREAMS_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    "STREAMS_CONSOLE_TOKEN": TOKEN,
    # A missing row is dead-lettered at once (no delayed retries: no relay runs here).
    "STREAMS_RESOURCE_CHANGE_RETRIES": "0",
}

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium")


@pytest.fixture(scope="module")
def mod_settings(real_stack: harness.Stack, template_db: str) -> Iterator[Settings]:
    with harness.isolated_settings(real_stack, template_db) as s:
        yield s


@pytest.fixture(scope="module")
def mod_worker(
    mod_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[harness.Proc]:
    log = tmp_path_factory.mktemp("console") / "worker.log"
    proc = harness.start_worker(mod_settings, log, env=WORKER_ENV)
    yield proc
    proc.stop()


def _request(
    proc: harness.Proc, path: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """One request that does not follow redirects: status, headers, body."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(
        f"http://127.0.0.1:{proc.web_port}{path}",
        method=method,
        headers=headers or {},
        data=b"partition=0&offset=0" if method == "POST" else None,
    )
    try:
        with opener.open(req, timeout=15) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def test_every_console_page_needs_the_token(mod_worker: harness.Proc) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/console", "/console/dead-letters", "/console/configs?key=abc"):
        status, _, body = _request(mod_worker, path)
        assert status == 401, path
        assert 'name="token"' in body  # the sign-in form
        assert _request(mod_worker, path, headers=bearer)[0] == 200, path
    assert _request(mod_worker, "/console?token=wrong")[0] == 401
    status, headers, _ = _request(mod_worker, f"/console?token={TOKEN}")
    assert status == 303 and headers["Location"] == "/console"
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
    cookie = {"Cookie": f"streams_console_token={TOKEN}"}
    assert _request(mod_worker, "/console", headers=cookie)[0] == 200
    # Replay is a POST with the token and the form's CSRF field; never a GET.
    assert _request(mod_worker, "/console/dead-letters/replay", method="POST")[0] == 401
    forged = _request(mod_worker, "/console/dead-letters/replay", method="POST", headers=bearer)
    assert forged[0] == 403
    assert _request(mod_worker, "/console/dead-letters/replay", headers=bearer)[0] == 405
    # Input comes back escaped, even in an error.
    evil = "/console/dead-letters?since=%3Cscript%3Ex%3C/script%3E"
    status, _, body = _request(mod_worker, evil, headers=bearer)
    assert status == 400 and "<script>" not in body and "&lt;script&gt;" in body
    # The worker's own endpoints stay as they were.
    assert mod_worker.get("/health")[0] == 200


def test_see_a_dead_letter_replay_it_and_see_it_processed(
    mod_worker: harness.Proc, mod_settings: Settings
) -> None:
    rows = Rows(mod_settings.database_url.get())
    missing = 10**12 + 7
    pub = Publisher(mod_settings)
    try:
        with Receiver() as receiver:
            rows.install(rows.app(receiver.url("/late"), ["issue.created"]))
            change = rows.change("Group", missing)
            pub.publish("resource-changes", change, key=rows.organization_id)
            _browse_and_replay(mod_worker, rows, receiver, missing)
    finally:
        pub.close()


def test_look_up_a_project_config_by_public_key(
    mod_worker: harness.Proc, mod_settings: Settings
) -> None:
    dsn = mod_settings.database_url.get()
    seeded = seed(dsn, slug="console-org")
    project = seeded.project_ids[0]
    (key,) = seeded.keys[project]
    pub = Publisher(mod_settings)
    resolver = DatabaseScopeResolver(dsn)
    client.set_publisher(pub)
    client.set_scope_resolver(resolver)
    try:
        client.schedule_invalidate_project_config(trigger="test", project_id=project)
        harness.wait_for(
            lambda: mod_worker.get(f"/api/project-configs/{key}")[0] == 200, 30, 0.2, "served"
        )
    finally:
        client.set_scope_resolver(None)
        client.set_publisher(None)
        resolver.close()
        pub.close()
    base = f"http://127.0.0.1:{mod_worker.web_port}"
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{base}/console/configs?token={TOKEN}")
            page.fill("input[name=key]", key)
            page.click("button[type=submit]")
            page.wait_for_selector("pre")
            text = page.inner_text("main")
            assert f"p0 #{project}" in text and "console-org" in text
            assert "Served document (HTTP 200)" in text
            assert '"project_slug": "p0"' in page.inner_text("pre")
            page.fill("input[name=key]", "no-such-key")
            page.click("button[type=submit]")
            page.wait_for_selector("text=No project key with that value")
            assert "Served document (HTTP 404)" in page.inner_text("main")
        finally:
            browser.close()


def _browse_and_replay(proc: harness.Proc, rows: Rows, receiver: Receiver, missing: int) -> None:
    base = f"http://127.0.0.1:{proc.web_port}"
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            resp = page.goto(f"{base}/console")
            assert resp is not None and resp.status == 401
            page.fill("input[name=token]", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_selector("h2:has-text('Agents')")
            agents = page.inner_text("table >> nth=0")
            assert "resource_changes" in agents and "webhook_delivery" in agents

            def listed() -> bool:
                page.goto(f"{base}/console/dead-letters?reason=instance_missing")
                return f"issue_group {missing} not visible" in page.content()

            harness.wait_for(listed, 60, 1.0, "the dead letter in the console")
            assert receiver.received() == []
            # Fix the cause: the row the change was about now exists.
            with psycopg.connect(rows.dsn, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO issue_group (id, project_id, title) VALUES (%s, %s, 'late row')",
                    (missing, rows.project_id),
                )
            page.click("button[name=replay]")
            page.wait_for_selector("#message")
            assert "Replayed" in page.inner_text("#message")
            assert "replayed 20" in page.content()
            (req,) = harness.wait_for(receiver.received, 30, what="the replayed change's POST")
            assert req.json()["data"]["issue"]["title"] == "late row"
            # A second replay of the same letter is refused (recorded in PostgreSQL).
            assert page.locator("button[name=replay]").count() == 0
            _status_screenshot(page, base, rows)
        finally:
            browser.close()


def _status_screenshot(page: Page, base: str, rows: Rows) -> None:
    # Two outbox rows nobody relays (no relay runs here): a backlog with an age.
    with psycopg.connect(rows.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO region_outbox (shard_scope, shard_identifier, category, "
            "object_identifier, date_added) SELECT 'organization', %s, 'issue_change', n, "
            "now() - interval '95 seconds' FROM generate_series(1, 2) AS n",
            (rows.organization_id,),
        )

    def lag_shown() -> bool:
        # Offsets are committed every second and the lag is cached for a few.
        page.goto(f"{base}/console")
        page.wait_for_selector("h2:has-text('Outbox backlog')")
        return "resource-changes" in page.inner_text("table >> nth=2")

    harness.wait_for(lag_shown, 20, 1.0, "consumer lag of resource-changes")
    backlog = page.inner_text("table >> nth=3")
    assert "region_outbox\t2\t1m 3" in backlog  # 2 rows, the oldest 1m 35s or so
    if os.environ.get("STREAMS_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
