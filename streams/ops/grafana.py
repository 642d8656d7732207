"""A small model of Grafana dashboards (rows of panels of PromQL queries) and its JSON.

Dashboard definitions live in ``streams.ops.dashboards``; this module only knows how
Grafana wants them laid out: a 24-column grid, a ``datasource`` variable, one
``label_values`` variable per filter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # or "bargauge", "table", "stat"
    description: str = ""
    width: int = 12


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Variable:
    name: str
    metric: str  # label_values(<metric>, <name>)
    label: str = ""

    def render(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label or self.name,
            "type": "query",
            "datasource": DATASOURCE,
            "query": {"query": f"label_values({self.metric}, {self.name})", "refId": self.name},
            "definition": f"label_values({self.metric}, {self.name})",
            "refresh": 2,
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"text": "All", "value": "$__all"},
            "sort": 1,
        }


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    variables: tuple[Variable, ...] = field(default_factory=tuple)

    def queries(self) -> list[str]:
        return [q.expr for r in self.rows for p in r.panels for q in p.queries]

    def render(self) -> dict[str, Any]:
        panels: list[dict[str, Any]] = []
        y = 0
        for row in self.rows:
            panels.append(
                {
                    "id": len(panels) + 1,
                    "type": "row",
                    "title": row.title,
                    "collapsed": False,
                    "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                    "panels": [],
                }
            )
            y += 1
            x = 0
            for panel in row.panels:
                if x + panel.width > 24:
                    x, y = 0, y + 8
                panels.append(_panel(len(panels) + 1, panel, x, y))
                x += panel.width
            y += 8
        datasource_var = {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
        }
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["streams", "kafka"],
            "editable": True,
            "schemaVersion": 39,
            "version": 1,
            "refresh": "30s",
            "time": {"from": "now-3h", "to": "now"},
            "timezone": "",
            "templating": {"list": [datasource_var, *(v.render() for v in self.variables)]},
            "annotations": {"list": []},
            "panels": panels,
        }


def _panel(pid: int, p: Panel, x: int, y: int) -> dict[str, Any]:
    return {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": p.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["max"]}},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": q.expr,
                "legendFormat": q.legend,
                "instant": q.instant,
                "range": not q.instant,
            }
            for i, q in enumerate(p.queries)
        ],
    }


def quantiles(metric: str, by: str) -> tuple[Query, ...]:
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket[{RATE}])))",
            f"p{int(q * 100)} {{{{{by}}}}}",
        )
        for q in (0.5, 0.95, 0.99)
    )
