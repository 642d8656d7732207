"""The Faust application: every agent of this silo in one worker.

``streams worker`` runs it; so does ``faust -A streams.app worker`` (the ``app``
attribute is built from the environment on first access). The worker's web server
serves ``/metrics`` (Prometheus) and ``/health``.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import Any

import faust
from prometheus_client import generate_latest

from streams import faust_drain, faust_gaps, logs, metrics
from streams.agents import BUILTIN_AGENT_MODULES
from streams.avro.faust_codec import register_codecs
from streams.health import Bounded, BrokerProbe
from streams.preflight import DatabaseProbe
from streams.runtime import Runtime
from streams.settings import Settings, get_settings

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> faust.App:
    datadir = settings.state_dir / "faust" / settings.app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap_servers}",
        store=settings.table_store,
        datadir=str(datadir),
        web_host=settings.web_host,
        web_bind=settings.web_host,  # Faust binds web_bind (default 0.0.0.0), not web_host
        web_port=settings.web_port,
        web_in_thread=False,
        broker_session_timeout=settings.kafka_session_timeout,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval,
        broker_rebalance_timeout=settings.kafka_session_timeout,
        consumer_auto_offset_reset="earliest",
        topic_partitions=4,
        topic_replication_factor=settings.replication_factor,
        table_cleanup_interval=1.0,
        broker_commit_interval=1.0,
        value_serializer="raw",
        key_serializer="raw",
        autodiscover=False,
        # `faust -A streams.app worker` too logs through streams' one formatter.
        logging_config=logs.dict_config(settings.log_level, settings.log_format),
    )
    if settings.consumer_fetch_max_wait is not None:
        from streams.faust_fetch import set_fetch_max_wait

        set_fetch_max_wait(settings.consumer_fetch_max_wait)
    faust_drain.enable(settings.consumer_fast_drain)
    faust_gaps.enable(settings.topic_prefix)
    runtime = Runtime.build(settings)
    register_codecs(runtime.codec)
    app.streams_runtime = runtime  # type: ignore[attr-defined]
    _install_views(app, runtime)
    for name in (*selected_builtins(settings), *settings.agent_modules):
        module = importlib.import_module(name)
        module.install(app, runtime)
    return app


def selected_builtins(settings: Settings) -> list[str]:
    """Built-in agent modules this worker runs: all, or those named by ``STREAMS_AGENTS``
    (their last dotted part, e.g. ``buffers,invalidation``; ``none`` for no built-in)."""
    if settings.agents is None:
        return list(BUILTIN_AGENT_MODULES)
    wanted = set(settings.agents)
    return [m for m in BUILTIN_AGENT_MODULES if m.rsplit(".", 1)[-1] in wanted]


def _install_views(app: faust.App, runtime: Runtime) -> None:
    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        return web.bytes(
            generate_latest(metrics.REGISTRY), content_type="text/plain; version=0.0.4"
        )

    # The probes' own waits (connect timeout, then 1 s for a direct connection), plus room.
    bound = runtime.settings.connect_timeout + 2.0
    database = Bounded(DatabaseProbe(runtime.pools, runtime.settings).cause, bound)
    broker = Bounded(BrokerProbe(runtime.settings).cause, bound)

    @app.page("/health")
    async def health_view(web: Any, request: Any) -> Any:
        # Standby replicas of tables are not the worker's partitions: left out.
        faust_owned = (
            [
                f"{tp.topic}:{tp.partition}"
                for tp in app.consumer.assignment() - app.assignor.assigned_standbys()
            ]
            if app.consumer
            else []
        )
        direct = runtime.consumers
        # Faust is ready once it owns partitions; a worker whose agents all consume
        # directly has nothing for Faust to own.
        faust_ready = (bool(faust_owned) and not app.rebalancing) or len(direct) == len(
            runtime.agents
        )
        ready = faust_ready and all(c.ready for c in direct)
        # A set: the served-configs feed follows partitions Faust assigned (the table's).
        assignment = sorted({*faust_owned, *(tp for c in direct for tp in c.assignment())})
        db_down, broker_down = await asyncio.gather(database.cause(), broker.cause())
        down = db_down or broker_down
        return web.json(
            {
                "status": "not_ready" if down else "ready" if ready else "starting",
                "database": f"down: {db_down}" if db_down else "up",
                "broker": f"down: {broker_down}" if broker_down else "up",
                "silo": runtime.settings.silo_mode.value,
                "agents": runtime.agents,
                "skipped_agents": runtime.skipped_agents,
                "assignment": assignment,
            },
            status=503 if down else 200,
        )

    from streams.console.views import install as install_console

    install_console(app, runtime)


_app: faust.App | None = None


def __getattr__(name: str) -> Any:
    global _app
    if name == "app":
        if _app is None:
            _app = create_app(get_settings())
        return _app
    raise AttributeError(name)
