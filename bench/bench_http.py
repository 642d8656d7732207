"""HTTP sender micro-benchmark: AiohttpSender vs LeanSender, same receiver, same run.

A local aiohttp receiver runs in another process (it reads each body and answers 200
"ok", as a webhook target would). Each sender, in alternating rounds, POSTs the same
signed ~1 KB body with the worker's headers from ``BENCH_HTTP_LANES`` concurrent lanes.
Printed per sender: POSTs/s, client CPU per POST (this process: what the webhook
worker pays) and the receiver's CPU per POST, with the machine's load. The ratio of
client CPU per POST is the figure that survives a loaded machine.

    .venv/bin/python bench/bench_http.py
    BENCH_HTTP_POSTS=20000 BENCH_HTTP_LANES=64 BENCH_HTTP_ROUNDS=3 \
        .venv/bin/python bench/bench_http.py
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._machine import cpu_seconds  # noqa: E402
from bench._results import Results, machine  # noqa: E402
from streams.webhooks import signing  # noqa: E402
from streams.webhooks.http import AiohttpSender, HttpSender  # noqa: E402
from streams.webhooks.http11 import LeanSender  # noqa: E402
from streams.webhooks.ssrf import SsrfGuard  # noqa: E402

POSTS = int(os.environ.get("BENCH_HTTP_POSTS", "10000"))
LANES = int(os.environ.get("BENCH_HTTP_LANES", "64"))
ROUNDS = int(os.environ.get("BENCH_HTTP_ROUNDS", "2"))


def serve() -> None:
    """The receiver process: an aiohttp app on a free loopback port, printed on stdout."""
    from aiohttp import web

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


async def one_round(sender: HttpSender, url: str) -> tuple[float, float, int]:
    """POSTS posts from LANES lanes: (wall seconds, client CPU seconds, non-200 count)."""
    body = json.dumps({"action": "created", "data": {"issue": {"id": "1", "title": "x" * 900}}})
    data = body.encode()
    headers = signing.headers(
        kind="sentry_app", body=data, secret="s3cret", request_id="r-1", resource="issue"
    )
    failures = 0

    async def lane(n: int) -> None:
        nonlocal failures
        for _ in range(n):
            result = await sender.post(url, data, headers, 10.0)
            failures += result.status != 200

    await sender.post(url, data, headers, 10.0)  # connect outside the measurement
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(lane(POSTS // LANES) for _ in range(LANES)))
    return time.perf_counter() - wall, time.process_time() - cpu, failures


def measure(name: str, make: type[AiohttpSender] | type[LeanSender], url: str, rx: int) -> float:
    async def run() -> tuple[float, float, int]:
        sender = make(SsrfGuard(allow=["127.0.0.1"]))
        try:
            return await one_round(sender, url)
        finally:
            await sender.close()

    rx_before = cpu_seconds(rx)
    wall, cpu, failures = asyncio.run(run())
    rx_cpu = cpu_seconds(rx) - rx_before
    posts = LANES * (POSTS // LANES)
    print(
        f"  {name:14} {posts / wall:8,.0f} POSTs/s  client {cpu / posts * 1e6:6.1f} us CPU/POST"
        f"  receiver {rx_cpu / posts * 1e6:6.1f} us/POST  non-200: {failures}  ({machine()})"
    )
    return cpu / posts


def main() -> None:
    results = Results("http")
    rx = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout is not None
        url = f"http://127.0.0.1:{rx.stdout.readline().strip()}/hook"
        print(
            f"{POSTS} POSTs per round, {LANES} lanes, {ROUNDS} rounds each, receiver pid {rx.pid}"
        )
        costs: dict[str, list[float]] = {"aiohttp": [], "lean": []}
        for i in range(ROUNDS):
            print(f"round {i + 1}")
            costs["aiohttp"].append(measure("AiohttpSender", AiohttpSender, url, rx.pid))
            costs["lean"].append(measure("LeanSender", LeanSender, url, rx.pid))
    finally:
        rx.terminate()
        rx.wait(10)
    aio, lean = min(costs["aiohttp"]), min(costs["lean"])
    print(
        f"best client CPU per POST: aiohttp {aio * 1e6:.1f} us, lean {lean * 1e6:.1f} us:"
        f" {aio / lean:.2f}x less CPU per POST ({machine()})"
    )
    results.add(
        "lean sender client CPU per POST",
        lean * 1e6,
        "us",
        alternative=f"aiohttp {aio * 1e6:.1f} us",
    )
    results.add("aiohttp / lean client CPU per POST", aio / lean, "x")


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        main()
