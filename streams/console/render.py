"""HTML building blocks: every value is escaped unless it is ``Html`` built here.

Pages are plain server-rendered HTML with one small stylesheet and no script; the
status page refreshes itself with a ``<meta http-equiv="refresh">``.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Sequence
from urllib.parse import urlencode

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2433;background:#f6f7f9}
header{background:#1d2433;color:#fff;padding:10px 20px;display:flex;gap:24px;align-items:center}
header a{color:#cfd6e4;text-decoration:none}header a.on{color:#fff;font-weight:600}
header b{font-size:16px;margin-right:12px}
main{padding:16px 20px;max-width:1200px}
h2{font-size:16px;margin:22px 0 8px}
table{border-collapse:collapse;background:#fff;width:100%;box-shadow:0 1px 2px #0001}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e5e8ee;vertical-align:top}
th{background:#eef1f5;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#b42318;font-weight:600}.ok{color:#067647}.muted{color:#667085}
.note{background:#fff8e1;border:1px solid #f5d97a;padding:8px 12px;margin:10px 0}
form.inline{display:inline}pre{background:#fff;padding:10px;overflow:auto}
details summary{cursor:pointer;color:#344054}
input,select,button{font:inherit;padding:3px 6px}
"""

NAV = (
    ("status", "/console", "Status"),
    ("dlq", "/console/dead-letters", "Dead letters"),
    ("configs", "/console/configs", "Project configs"),
)


class Html(str):
    """Markup that is already safe: built from escaped parts by this module."""


def e(value: object) -> Html:
    """``value`` as safe HTML text (``Html`` passes through unchanged)."""
    if isinstance(value, Html):
        return value
    return Html(html.escape(str(value), quote=True))


def join(parts: Iterable[Html]) -> Html:
    return Html("".join(parts))


def tag(name: str, content: object = "", /, **attrs: object) -> Html:
    """``<name attrs>content</name>``; attribute names use ``_`` for ``-``/``class``."""
    rendered = "".join(
        f' {k.rstrip("_").replace("_", "-")}="{e(v)}"' for k, v in attrs.items() if v is not None
    )
    return Html(f"<{name}{rendered}>{e(content)}</{name}>")


def link(href: str, text: object, **query: object) -> Html:
    q = {k: v for k, v in query.items() if v not in (None, "")}
    return tag("a", text, href=f"{href}?{urlencode(q)}" if q else href)


def table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], numeric: frozenset[int] = frozenset()
) -> Html:
    """A table; cells are escaped (``Html`` cells pass as they are)."""
    head = join(tag("th", h) for h in headers)
    body = join(
        tag("tr", join(tag("td", c, class_="n" if i in numeric else None) for i, c in enumerate(r)))
        for r in rows
    )
    if not body:
        body = tag("tr", tag("td", "nothing to show", colspan=len(headers), class_="muted"))
    return Html(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def age(seconds: float | None) -> str:
    """A short duration: 0.4s, 12s, 3m 05s, 2h 10m, 3d 4h; an em dash for None."""
    if seconds is None:
        return "\u2014"
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def when(epoch_ms: int) -> str:
    """UTC time of an epoch in milliseconds, to the second."""
    return dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def number(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"


def layout(title: str, active: str, body: Html, *, refresh: int | None = None) -> str:
    """A whole page: header with navigation, then ``body``."""
    nav = join(
        tag("a", text, href=href, class_="on" if key == active else None) for key, href, text in NAV
    )
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"{meta}<title>{e(title)} \u00b7 streams console</title><style>{CSS}</style></head>"
        f"<body><header><b>streams</b>{nav}</header><main>{body}</main></body></html>"
    )


def login_page(path: str, failed: bool) -> str:
    """The 401 page: a form that sends the token as ``?token=`` to ``path``."""
    note = tag("p", "That token is not right.", class_="bad") if failed else Html("")
    form = Html(
        f'<form method="get" action="{e(path)}"><label>Console token '
        '<input type="password" name="token" autofocus></label> '
        "<button type=submit>Open</button></form>"
    )
    body = join([tag("h2", "Sign in"), note, form])
    return layout("Sign in", "", body)
