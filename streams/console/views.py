"""The console's routes on the worker's Faust web server (aiohttp underneath).

GET  /console                       pipeline status (refreshes every 5 s)
GET  /console/dead-letters          dead letters: ?topic= &reason= &since= &page=
POST /console/dead-letters/replay   replay one (form: partition, offset, csrf)
GET  /console/configs               project-config lookup: ?key=

Blocking client work (Kafka reads, replay, sync SQL) runs in threads so the
worker's event loop keeps processing messages.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import faust
from aiohttp import web

from streams import metrics
from streams.console import configs, data, pages
from streams.console import dead_letters as dlq
from streams.console.auth import COOKIE, Credentials, Guard
from streams.console.lag import LagCache
from streams.console.render import layout, login_page, tag
from streams.publisher import Publisher
from streams.runtime import Runtime

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SAMPLE_INTERVAL = 2.0


class Console:
    """State shared by the console's routes: the guard, caches, a replay publisher."""

    def __init__(self, runtime: Runtime, guard: Guard) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.guard = guard
        self.lag = LagCache(runtime.settings)
        self.rates = data.RateSampler()
        self._publisher: Publisher | None = None

    def publisher(self) -> Publisher:
        if self._publisher is None:
            self._publisher = Publisher(self.settings)
        return self._publisher

    def close(self) -> None:
        """Close the lag clients and the replay producer (worker shutdown)."""
        self.lag.close()
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None

    def sample(self) -> None:
        counters = data.agent_counters(metrics.REGISTRY)
        self.rates.sample({a: data.handled(c) for a, c in counters.items()})

    # -- pages ------------------------------------------------------------------
    async def status(self, request: web.Request) -> web.StreamResponse:
        s = self.settings
        backlog: list[data.BacklogRow] | str
        schedules: list[data.TableRows] = []
        lag = asyncio.ensure_future(self.lag.get())
        try:
            pool = await self.runtime.pool()
            async with pool.connection(timeout=3.0) as conn:
                await conn.execute("SET statement_timeout = '3s'")
                backlog = await data.outbox_backlog(conn)
                schedules = await data.schedule_tables(conn)
        except Exception as exc:  # shown on the page; the database may be away
            log.warning("console.backlog.failed", extra={"error": repr(exc)})
            backlog = f"database unavailable: {exc!r}"
        status = pages.Status(
            worker=f"worker {s.app_id} \u00b7 silo {s.silo_mode.value}",
            agents=data.agent_rows(metrics.REGISTRY, self.runtime.agents, self.rates),
            dead_letters=data.dead_letter_counters(metrics.REGISTRY),
            lag=await lag,
            backlog=backlog,
            schedules=schedules,
        )
        return _html(pages.status_page(status))

    async def dead_letters(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        since = q.get("since", "").strip()
        try:
            since_ms = _since_ms(since)
        except ValueError:
            return _message("Bad filter", f"since={since!r} is not an ISO date-time", 400)
        filters = dlq.Filters(q.get("topic", ""), q.get("reason", ""), since_ms)
        number = int(q["page"]) if q.get("page", "").isdigit() else 1
        letters, truncated = await asyncio.to_thread(dlq.read_recent, self.settings)
        page = dlq.paginate(letters, filters, number, truncated)
        done = await asyncio.to_thread(dlq.replayed, self.settings, page.letters)
        can = {(x.partition, x.offset): dlq.replayable(self.settings, x) for x in page.letters}
        html = pages.dead_letters_page(
            page,
            f=filters,
            since=since,
            done=done,
            can_replay=can,
            csrf=self.guard.csrf_token(),
            message=q.get("message", ""),
        )
        return _html(html)

    async def replay(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        if not self.guard.csrf_ok(str(form.get("csrf", "")), request.headers, request.host):
            return _message("Refused", "The replay form is stale or came from another site.", 403)
        try:
            partition, offset = int(str(form["partition"])), int(str(form["offset"]))
        except (KeyError, ValueError):
            return _message("Bad request", "partition and offset must be integers", 400)
        letter = await asyncio.to_thread(dlq.fetch_one, self.settings, partition, offset)
        if letter is None:
            message = f"No dead letter at {partition}:{offset}."
        elif not dlq.replayable(self.settings, letter):
            message = f"{letter.source_topic!r} is not a topic; use `streams dlq replay`."
        elif await asyncio.to_thread(dlq.replay_one, self.settings, letter, self.publisher()):
            message = f"Replayed {partition}:{offset} to {letter.source_topic}."
            log.info(
                "console.replayed",
                extra={"partition": partition, "offset": offset, "topic": letter.source_topic},
            )
        else:
            message = f"{partition}:{offset} was replayed before; not sent again."
        # Post/redirect/get: a reload does not resubmit the form.
        return _redirect(f"{pages.LIST_PATH}?{urlencode({'message': message})}")

    async def configs(self, request: web.Request) -> web.StreamResponse:
        key = request.query.get("key", "").strip()
        if not key:
            return _html(pages.config_page("", None, None))
        pool = await self.runtime.pool()
        async with pool.connection(timeout=3.0) as conn:
            row = await configs.key_row(conn, key)
        base = configs.base_url(self.settings.web_host, self.settings.web_port)
        return _html(pages.config_page(key, row, await configs.served(base, key)))

    # -- the token --------------------------------------------------------------
    def guarded(self, handler: Handler) -> Handler:
        async def check(request: web.Request) -> web.StreamResponse:
            creds = Credentials(
                request.headers.get("Authorization", ""),
                request.cookies.get(COOKIE, ""),
                request.query.get("token", ""),
            )
            if not self.guard.allows(creds):
                failed = "token" in request.query
                return _html(login_page(request.path, failed), status=401)
            if self.guard.logs_in(creds) and request.method == "GET":
                # Set the cookie and drop the token from the address bar.
                rest = {k: v for k, v in request.query.items() if k != "token"}
                target = f"{request.path}?{urlencode(rest)}" if rest else request.path
                resp = _redirect(target)
                resp.set_cookie(
                    COOKIE, creds.query, httponly=True, samesite="Strict", path="/console"
                )
                return resp
            try:
                return await handler(request)
            except Exception as exc:  # a dependency is away: say so on the page
                log.warning("console.page.failed", extra={"path": request.path, "error": repr(exc)})
                return _message("Unavailable", f"{request.path} failed: {exc!r}", 503)

        return check


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(
        text=body,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "form-action 'self'; frame-ancestors 'none'",
        },
    )


def _message(title: str, text: str, status: int) -> web.Response:
    return _html(layout(title, "", tag("p", text, class_="note")), status=status)


def _redirect(target: str) -> web.Response:
    return web.Response(status=303, headers={"Location": target, "Cache-Control": "no-store"})


def _since_ms(since: str) -> int:
    if not since:
        return 0
    at = dt.datetime.fromisoformat(since)
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return int(at.timestamp() * 1000)


def _route(app: faust.App, path: str, handler: Handler, method: str = "get") -> None:
    async def call(self: Any, request: web.Request, **kwargs: Any) -> web.StreamResponse:
        return await handler(request)

    name = "console" + path.replace("/", "_").replace("-", "_").removeprefix("_console")
    view = type(name, (faust.web.View,), {method: call})
    app.page(path, name=name)(view)


def install(app: faust.App, runtime: Runtime, token: str | None = None) -> Console:
    """Register the console's routes and its rate sampler on ``app``."""
    if token is None:
        token = runtime.settings.console_token.get() or None
    console = Console(runtime, Guard(token))
    _route(app, "/console", console.guarded(console.status))
    _route(app, pages.LIST_PATH, console.guarded(console.dead_letters))
    _route(app, pages.REPLAY_PATH, console.guarded(console.replay), "post")
    _route(app, "/console/configs", console.guarded(console.configs))

    async def console_rates() -> None:
        console.sample()

    async def close_console(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await asyncio.to_thread(console.close)

    app.timer(SAMPLE_INTERVAL, name="console-rates")(console_rates)
    app.on_before_shutdown.connect(close_console)

    return console
