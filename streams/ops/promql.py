"""Just enough PromQL reading to list the metric names an expression uses.

Dashboards and alert rules are tested against a live scrape: every metric they name
must really be exported. This does not parse PromQL fully; it removes what cannot be
a metric name (strings, label matchers, ranges, grouping clauses, function and
aggregation calls, keywords, numbers, Grafana variables) and keeps the rest.
"""

from __future__ import annotations

import re

KEYWORDS = frozenset(
    [
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
        "limitk",
        "limit_ratio",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "atan2",
        "inf",
        "nan",
        "start",
        "end",
    ]
)
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+")
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.:])[a-zA-Z_:][\w:]*")


def metric_names(expr: str) -> set[str]:
    """Metric names ``expr`` selects (``rate(x_total[5m])`` -> ``{"x_total"}``)."""
    text = _GRAFANA_VAR.sub("1", expr)
    text = _STRING.sub('""', text)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    names: set[str] = set()
    for m in _IDENT.finditer(text):
        name = m.group(0)
        rest = text[m.end() :].lstrip()
        if name.lower() in KEYWORDS or rest.startswith("("):
            continue
        names.add(name)
    return names


def exposition_names(text: str) -> set[str]:
    """Series names a Prometheus text exposition offers, including ones with no samples yet.

    A labelled family that has no children yet still has ``# TYPE`` lines; its series
    names are derived from its type (``_bucket``/``_sum``/``_count`` for histograms).
    """
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gauge": ("",),
        "untyped": ("",),
    }
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            base = name.removesuffix("_total") if kind == "counter" else name
            names.update(base + s for s in suffixes.get(kind, ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names
