"""``streams lag-exporter``: the poll loop and the HTTP endpoint (/metrics, /health).

A background thread polls the cluster every ``interval`` seconds and swaps in the new
snapshot; scrapes only render the latest one, so a slow or absent broker never makes
a scrape hang. When a poll fails (broker away) the last snapshot stays served,
``streams_lag_broker_up`` drops to 0, and polling goes on until the broker is back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams import kafka_config, metrics
from streams.errors import StreamsError
from streams.lag.collector import LagCollector
from streams.lag.poller import EMPTY, LagPoller, Snapshot
from streams.lag.source import KafkaOffsetSource
from streams.settings import Settings

log = logging.getLogger(__name__)

POLLS = metrics.counter(
    "streams_lag_polls_total", "Lag exporter polls of the cluster, by outcome.", ("outcome",)
)
POLL_SECONDS = metrics.histogram("streams_lag_poll_seconds", "Time one lag poll took.")
BROKER_UP = metrics.gauge(
    "streams_lag_broker_up", "1 if the last lag poll reached the cluster, else 0."
)
LAST_SUCCESS = metrics.gauge(
    "streams_lag_last_success_timestamp_seconds", "Unix time of the last successful lag poll."
)
PROBE_MISSES = metrics.counter(
    "streams_lag_probe_misses_total",
    "Partitions whose true end offset could not be fetched (their reported end was used).",
)


@dataclass(frozen=True)
class ExporterOptions:
    host: str
    port: int
    interval: float
    groups: str
    cluster: str
    timeout: float


def options_from(settings: Settings, **overrides: object) -> ExporterOptions:
    """Options from settings, with CLI flags (when not None) taking precedence."""
    base = {
        "host": settings.web_host,
        "port": settings.lag_exporter_port,
        "interval": settings.lag_exporter_interval,
        "groups": settings.lag_exporter_groups,
        "cluster": settings.lag_exporter_cluster,
        "timeout": max(2.0, min(10.0, settings.lag_exporter_interval * 2)),
    }
    base.update({k: v for k, v in overrides.items() if v is not None})
    return ExporterOptions(**base)  # type: ignore[arg-type]


class LagExporter:
    """Polls in a thread; ``snapshot()`` is the latest good reading."""

    def __init__(self, poller: LagPoller, interval: float) -> None:
        self.poller = poller
        self.interval = interval
        self._snapshot: Snapshot = EMPTY
        self.polled = 0  # successful polls so far
        self.failing = False
        self._misses = 0

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def poll_once(self) -> bool:
        started = time.perf_counter()
        try:
            snap = self.poller.poll()
        except Exception as exc:
            POLLS.labels("failure").inc()
            BROKER_UP.set(0)
            if not self.failing:
                log.warning("lag.poll.failed", extra={"error": repr(exc)})
            self.failing = True
            return False
        finally:
            POLL_SECONDS.observe(time.perf_counter() - started)
            misses = int(getattr(self.poller.source, "probe_misses", 0))
            PROBE_MISSES.inc(max(0, misses - self._misses))
            self._misses = misses
        self._snapshot = snap
        self.polled += 1
        POLLS.labels("success").inc()
        BROKER_UP.set(1)
        LAST_SUCCESS.set(time.time())
        if self.failing:
            log.info("lag.poll.recovered")
        self.failing = False
        return True

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            self.poll_once()
            stop.wait(max(0.0, self.interval - (time.monotonic() - started)))


def _handler(exporter: LagExporter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/metrics":
                self._send(200, generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST)
            elif self.path.split("?")[0] == "/health":
                ready = exporter.polled > 0
                body = {
                    "status": "ready" if ready else "starting",
                    "broker": "down" if exporter.failing else "up",
                    "polls": exporter.polled,
                    "groups": len(exporter.snapshot().groups),
                }
                self._send(200 if ready else 503, json.dumps(body).encode(), "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would flood the log

    return Handler


def build(settings: Settings, opts: ExporterOptions) -> tuple[LagExporter, LagCollector]:
    source = KafkaOffsetSource(kafka_config.common(settings), timeout=opts.timeout)
    exporter = LagExporter(LagPoller(source, opts.groups), opts.interval)
    return exporter, LagCollector(exporter.snapshot, opts.cluster)


class LagPollFailed(StreamsError):
    """One poll of ``--once`` could not read the cluster."""


def render_once(settings: Settings, opts: ExporterOptions) -> str:
    """One poll, rendered as exposition text (``streams lag-exporter --once``); raises
    ``LagPollFailed`` when the poll fails, so the command exits non-zero."""
    exporter, collector = build(settings, opts)
    try:
        if not exporter.poll_once():
            raise LagPollFailed(
                f"cannot read consumer-group offsets from Kafka at "
                f"{settings.kafka_bootstrap_servers} within {opts.timeout:g} s — see "
                "KAFKA_BOOTSTRAP_SERVERS and lag.poll.failed in the log"
            )
        metrics.REGISTRY.register(collector)
        try:
            return generate_latest(metrics.REGISTRY).decode()
        finally:
            metrics.REGISTRY.unregister(collector)
    finally:
        exporter.poller.source.close()


def serve(
    settings: Settings,
    opts: ExporterOptions,
    stop: threading.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT in the main thread)."""
    stop = stop or threading.Event()
    exporter, collector = build(settings, opts)
    metrics.REGISTRY.register(collector)
    server = ThreadingHTTPServer((opts.host, opts.port), _handler(exporter))
    server.daemon_threads = True
    url = f"http://{opts.host}:{server.server_address[1]}/metrics"
    http = threading.Thread(target=server.serve_forever, name="lag-http", daemon=True)
    http.start()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    log.info(
        "lag.exporter.started",
        extra={"url": url, "interval": opts.interval, "groups": opts.groups},
    )
    if on_ready:
        on_ready(url)
    try:
        exporter.run(stop)
    finally:
        server.shutdown()
        server.server_close()
        with contextlib.suppress(KeyError):
            metrics.REGISTRY.unregister(collector)
        exporter.poller.source.close()
        log.info("lag.exporter.stopped")
