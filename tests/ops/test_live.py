"""Dashboards and alert rules against live processes and a real Prometheus.

Every metric a dashboard panel or an alert names must be exported by a real worker,
lag exporter or relay; a real Prometheus (Debian's package, on loopback, its data in
tmp, stopped by PID) scrapes a worker and the exporter, sees the lag we build on
purpose, and fires the lag alert.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.cli import build_parser
from streams.dev.stack import free_port
from streams.ops import alerts, dashboards
from streams.ops.promql import exposition_names, metric_names
from streams.settings import Settings
from tests.lag.helpers import consume_exactly, make_topic, produce, scrape_text, start_exporter
from tests.ops.conftest import require_tool
from tests.support import harness

GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s"}


def build_lag(settings: Settings, produced: int = 50, consumed: int = 20) -> str:
    """A group of this test with ``produced - consumed`` messages of lag; its name."""
    bs = settings.kafka_bootstrap_servers
    topic, group = f"{settings.topic_prefix}live", f"{settings.topic_prefix}lagging"
    make_topic(bs, topic, 1)
    produce(bs, topic, {0: produced})
    consume_exactly(bs, group, topic, {0: consumed})
    return group


def has_command(name: str) -> bool:
    with contextlib.suppress(SystemExit):
        return bool(build_parser().parse_args([name]).func)
    return False


def start_relay(settings: Settings, processes: list[harness.Proc], log: Path) -> harness.Proc:
    port = free_port()
    proc = harness.spawn(["relay"], harness.env_for(settings, STREAMS_METRICS_PORT=str(port)), log)
    proc.web_port = port
    processes.append(proc)

    def serving() -> bool:
        if not proc.alive():
            raise AssertionError(f"relay exited:\n{proc.output()[-3000:]}")
        with contextlib.suppress(OSError):
            return proc.get("/metrics", timeout=1)[0] == 200
        return False

    harness.wait_for(serving, 30, 0.2, "relay metrics")
    return proc


def every_expression() -> dict[str, str]:
    """Where each query comes from -> the PromQL (dashboards, their variables, alerts)."""
    exprs: dict[str, str] = {}
    for board in dashboards.DASHBOARDS:
        for i, expr in enumerate(board.queries()):
            exprs[f"dashboard {board.uid} query {i}"] = expr
        for var in board.variables:
            exprs[f"dashboard {board.uid} variable {var.name}"] = var.metric
    for alert in alerts.alerts():
        exprs[f"alert {alert.name}"] = alert.expr
    return exprs


def test_every_dashboard_and_alert_metric_is_really_exported(
    settings: Settings,
    worker: Callable[..., harness.Proc],
    processes: list[harness.Proc],
    tmp_path: Path,
) -> None:
    build_lag(settings)
    proc = worker()
    exporter = start_exporter(settings, processes, tmp_path / "exporter.log")
    status, body = proc.get("/metrics")
    assert status == 200
    texts = [body.decode(), scrape_text(exporter.web_port or 0)]
    if has_command("relay"):
        relay = start_relay(settings, processes, tmp_path / "relay.log")
        texts.append(relay.get("/metrics")[1].decode())
    exported = set().union(*(exposition_names(t) for t in texts))
    assert "kafka_consumergroup_group_lag_seconds" in exported
    exported.add("up")  # Prometheus' own series for every target
    missing = {
        where: sorted(metric_names(expr) - exported)
        for where, expr in every_expression().items()
        if metric_names(expr) - exported
    }
    assert not missing, f"queries name metrics nobody exports: {missing}"


class Prometheus:
    """Debian's prometheus on a free loopback port, data in tmp, stopped by PID."""

    def __init__(self, tmp: Path, targets: dict[str, tuple[str, dict[str, str]]]) -> None:
        params = alerts.AlertParams(
            lag_seconds=2,
            lag_for="2s",
            absent_for="2s",
            target_down_for="2s",
            silos=("monolith",),
        )
        (tmp / "rules.yml").write_text(yaml.safe_dump(alerts.rule_groups(params, interval="1s")))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp / "rules.yml")],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [addr], "labels": labels}]}
                for job, (addr, labels) in targets.items()
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.log = tmp / "prometheus.log"
        args = [
            require_tool("prometheus"),
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        with self.log.open("ab") as out:
            popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
        self.proc = harness.Proc(popen, self.log, self.port)

    def ready(self) -> bool:
        if not self.proc.alive():
            raise AssertionError(f"prometheus exited:\n{self.proc.output()[-3000:]}")
        with contextlib.suppress(OSError):
            return self.proc.get("/-/ready", timeout=1)[0] == 200
        return False

    def query(self, expr: str, where: str = "") -> dict[str, Any]:
        url = f"/api/v1/query?query={urllib.parse.quote(expr)}"
        status, body = self.proc.get(url)
        data: dict[str, Any] = json.loads(body)
        assert status == 200 and data["status"] == "success", f"{where} {expr}: {data}"
        return data

    def values(self, expr: str) -> list[float]:
        return [float(r["value"][1]) for r in self.query(expr)["data"]["result"]]


@pytest.mark.slow  # a real Prometheus scraping for ~15 s: make test-slow
@pytest.mark.timeout(90)  # typically ~15 s; every wait below is bounded too
def test_prometheus_sees_the_lag_and_fires_the_alert(
    settings: Settings,
    worker: Callable[..., harness.Proc],
    processes: list[harness.Proc],
    tmp_path: Path,
) -> None:
    group = build_lag(settings, produced=50, consumed=20)
    proc = worker()
    exporter = start_exporter(
        settings,
        processes,
        tmp_path / "exporter.log",
        groups=f"^({re.escape(settings.topic_prefix)}|{re.escape(settings.app_id)}$)",
    )
    prom = Prometheus(
        tmp_path,
        {
            alerts.WORKER_JOB: (f"127.0.0.1:{proc.web_port}", {"silo": "monolith"}),
            alerts.EXPORTER_JOB: (f"127.0.0.1:{exporter.web_port}", {}),
        },
    )
    processes.append(prom.proc)
    harness.wait_for(prom.ready, 20, 0.2, "prometheus ready")
    lag = f'kafka_consumergroup_group_sum_lag{{group="{group}"}}'
    harness.wait_for(lambda: prom.values(lag) == [30.0], 20, 0.5, "lag 30 in prometheus")
    firing = f'ALERTS{{alertname="StreamsConsumerLagHigh", alertstate="firing", group="{group}"}}'
    harness.wait_for(lambda: prom.values(firing) == [1.0], 30, 0.5, "the lag alert firing")
    (seconds,) = prom.values(f'kafka_consumergroup_group_max_lag_seconds{{group="{group}"}}')
    assert seconds > 2
    assert prom.values(f'up{{job="{alerts.WORKER_JOB}"}}') == [1.0]
    assert prom.values('ALERTS{alertname="StreamsWorkerAbsentMonolith"}') == []
    # No relay is scraped here: its absence alert must fire (absent() really works).
    harness.wait_for(
        lambda: prom.values('ALERTS{alertname="StreamsRelayAbsentMonolith", alertstate="firing"}'),
        15,
        0.5,
        "the relay-absent alert",
    )
    # Every dashboard query is valid PromQL for a real Prometheus.
    for where, expr in every_expression().items():
        concrete = expr
        for var, value in GRAFANA_VARS.items():
            concrete = concrete.replace(var, value)
        prom.query(re.sub(r"\$\w+", ".*", concrete), where)
