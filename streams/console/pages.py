"""The console's three pages, from plain data to HTML (``render`` escapes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from streams.console.configs import KeyRow, Served
from streams.console.data import AgentRow, BacklogRow, TableRows
from streams.console.dead_letters import Filters, Letter, Page
from streams.console.lag import LagView
from streams.console.render import Html, age, e, join, layout, link, number, table, tag, when
from streams.dlq import headers as dl

REFRESH_SECONDS = 5
LIST_PATH = "/console/dead-letters"
REPLAY_PATH = "/console/dead-letters/replay"


@dataclass(frozen=True)
class Status:
    worker: str  # app id (consumer group) and silo
    agents: Sequence[AgentRow]
    dead_letters: Sequence[tuple[str, str, float]]
    lag: LagView
    backlog: Sequence[BacklogRow] | str  # a string: why it could not be read
    schedules: Sequence[TableRows]


def _rate(r: float | None) -> str:
    return "\u2014" if r is None else f"{r:,.1f}/s"


def _failed(value: float) -> Html:
    return tag("span", number(value), class_="bad") if value else e(number(value))


def status_page(s: Status) -> str:
    """Agents, dead letters sent, consumer lag, outbox backlog, schedules."""
    agents = table(
        ("agent", "rate", "succeeded", "failed", "ignored", "retries", "in flight"),
        (
            (
                a.agent,
                _rate(a.rate),
                number(a.success),
                _failed(a.failure),
                number(a.ignored),
                number(a.retries),
                number(a.in_flight),
            )
            for a in s.agents
        ),
        numeric=frozenset({1, 2, 3, 4, 5, 6}),
    )
    letters = table(
        ("source topic", "reason", "dead letters"),
        (
            (link(LIST_PATH, src, topic=src, reason=r), r, _failed(n))
            for src, r, n in s.dead_letters
        ),
        numeric=frozenset({2}),
    )
    lag_note = tag("p", s.lag.error, class_="note") if s.lag.error else Html("")
    lag = table(
        ("group", "topic", "partitions", "lag (messages)", "time lag"),
        ((r.group, r.topic, r.partitions, number(r.lag), age(r.lag_seconds)) for r in s.lag.rows),
        numeric=frozenset({2, 3, 4}),
    )
    if isinstance(s.backlog, str):
        backlog = tag("p", s.backlog, class_="note")
    else:
        backlog = table(
            ("table", "rows waiting", "oldest row"),
            (
                (b.table, f"{number(b.rows)}{'+' if b.capped else ''}", age(b.oldest_age))
                for b in s.backlog
            ),
            numeric=frozenset({1, 2}),
        )
    body = [
        tag("p", s.worker, class_="muted"),
        tag("h2", "Agents"),
        agents,
        tag("h2", "Dead letters sent by this worker"),
        letters,
        tag("h2", "Consumer lag"),
        lag_note,
        lag,
        tag("h2", "Outbox backlog"),
        backlog,
    ]
    for t in s.schedules:
        body += [
            tag("h2", f"Schedules: {t.table} (latest {len(t.rows)})"),
            table(t.columns, t.rows),
        ]
    return layout("Status", "status", join(body), refresh=REFRESH_SECONDS)


def _filter_form(page: Page, f: Filters, since: str) -> Html:
    def select(name: str, options: Sequence[str], current: str) -> Html:
        opts = [tag("option", "any", value="")] + [
            tag("option", o, value=o, selected="selected" if o == current else None)
            for o in options
        ]
        return tag("label", join([e(f"{name} "), tag("select", join(opts), name=name)]))

    since_input = tag(
        "label",
        join(
            [
                e("since (UTC) "),
                Html(f'<input name="since" placeholder="2025-01-31T12:00" value="{e(since)}">'),
            ]
        ),
    )
    parts = [
        select("topic", page.topics, f.topic),
        e(" "),
        select("reason", page.reasons, f.reason),
        e(" "),
        since_input,
        Html(" <button type=submit>Filter</button>"),
    ]
    return Html(f'<form method="get" action="{LIST_PATH}">{join(parts)}</form>')


def _replay_cell(x: Letter, done: float | None, can: bool, csrf: str) -> Html:
    if done is not None:
        return tag("span", f"replayed {when(int(done * 1000))}", class_="ok")
    if not can:
        return tag("span", "not a topic (use streams dlq replay)", class_="muted")
    return Html(
        f'<form class="inline" method="post" action="{REPLAY_PATH}">'
        f'<input type="hidden" name="partition" value="{x.partition}">'
        f'<input type="hidden" name="offset" value="{x.offset}">'
        f'<input type="hidden" name="csrf" value="{e(csrf)}">'
        f'<button type="submit" name="replay">Replay</button></form>'
    )


def _headers(x: Letter) -> Html:
    rows = [(k, v.decode("utf-8", "replace")) for k, v in x.headers]
    key = x.key.decode("utf-8", "replace") if x.key is not None else "(none)"
    size = "tombstone" if x.value is None else f"{len(x.value):,} bytes"
    rows = [
        ("key", key),
        ("value", size),
        ("dead-letter offset", f"{x.partition}:{x.offset}"),
        *rows,
    ]
    return Html(f"<details><summary>headers</summary>{table(('header', 'value'), rows)}</details>")


def dead_letters_page(
    page: Page,
    *,
    f: Filters,
    since: str,
    done: Mapping[tuple[int, int], float],
    can_replay: Mapping[tuple[int, int], bool],
    csrf: str,
    message: str = "",
) -> str:
    """A filtered page of dead letters, newest first, each with its replay action."""
    rows = []
    for x in page.letters:
        k = (x.partition, x.offset)
        error = f"{x.header(dl.H_ERROR_TYPE)}: {x.header(dl.H_ERROR_MESSAGE)}"
        rows.append(
            (
                when(x.timestamp_ms),
                x.source_topic,
                x.reason,
                x.header(dl.H_AGENT),
                join([e(error[:300]), _headers(x)]),
                _replay_cell(x, done.get(k), can_replay.get(k, False), csrf),
            )
        )
    nav = [e(f"{page.matched:,} dead letters, page {page.number} of {page.pages} ")]
    q = {"topic": f.topic, "reason": f.reason, "since": since}
    if page.number > 1:
        nav.append(link(LIST_PATH, "\u2190 newer", page=page.number - 1, **q))
    if page.number < page.pages:
        nav += [e(" "), link(LIST_PATH, "older \u2192", page=page.number + 1, **q)]
    body = [tag("h2", "Dead letters"), _filter_form(page, f, since)]
    if message:
        body.append(tag("p", message, class_="note", id="message"))
    if page.truncated:
        body.append(
            tag(
                "p",
                "Only the newest letters of each partition were read; "
                "`streams dlq list` shows them all.",
                class_="note",
            )
        )
    body += [
        tag("p", join(nav)),
        table(("dead-lettered", "source topic", "reason", "agent", "error", "replay"), rows),
    ]
    return layout("Dead letters", "dlq", join(body))


def config_page(key: str, row: KeyRow | None, served: Served | None) -> str:
    """The lookup form and, for a key, its rows and served document."""
    form = Html(
        '<form method="get" action="/console/configs"><label>Public key '
        f'<input name="key" size="40" value="{e(key)}"></label> '
        "<button type=submit>Look up</button></form>"
    )
    body = [tag("h2", "Project config by public key"), form]
    if key and row is None:
        body.append(tag("p", "No project key with that value in the database.", class_="note"))
    if row is not None:
        body.append(
            table(
                ("", "value"),
                [
                    (
                        "key",
                        f"{row.public_key} ({row.label or 'no label'}), status {row.key_status}",
                    ),
                    (
                        "project",
                        f"{row.project_slug} #{row.project_id} ({row.project_name}), "
                        f"status {row.project_status}",
                    ),
                    (
                        "organization",
                        f"{row.organization_slug} #{row.organization_id}, "
                        f"status {row.organization_status}",
                    ),
                ],
            )
        )
    if served is not None:
        body += [
            tag("h2", f"Served document (HTTP {served.status or 'no answer'})"),
            tag("pre", served.body),
        ]
    return layout("Project configs", "configs", join(body))
