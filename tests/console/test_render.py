"""The console's HTML: escaped everywhere, pages from plain data (no broker, no database)."""

from __future__ import annotations

from streams.console import pages
from streams.console.configs import KeyRow, Served, base_url
from streams.console.data import AgentRow, BacklogRow, RateSampler, TableRows
from streams.console.dead_letters import Filters, Letter, paginate
from streams.console.lag import LagView, TopicLag
from streams.console.render import Html, age, e, table, tag

EVIL = '<script>alert("x")</script>'


def letter(
    offset: int,
    *,
    topic: str = "t.resource-changes",
    reason: str = "decode",
    ts: int = 1_700_000_000_000,
    message: str = "boom",
) -> Letter:
    headers = (
        ("dlq.source_topic", topic.encode()),
        ("dlq.reason", reason.encode()),
        ("dlq.error_type", b"ValueError"),
        ("dlq.error_message", message.encode()),
        ("dlq.agent", b"resource-changes"),
    )
    return Letter(0, offset, b"k", b"v", headers, ts + offset)


def test_values_are_escaped_and_html_passes_through() -> None:
    assert e(EVIL) == "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
    assert e(Html("<b>ok</b>")) == "<b>ok</b>"
    out = tag("a", EVIL, href='"><script>', class_="x")
    assert "<script>" not in out
    assert 'class="x"' in out
    assert "<script>" not in table(("h",), [(EVIL,)])


def test_status_page_shows_agents_lag_backlog_and_escapes_names() -> None:
    status = pages.Status(
        worker="worker w",
        agents=[AgentRow(EVIL, 10, 2, 0, 1, 0, 3.25)],
        dead_letters=[("t.resource-changes", "decode", 2.0)],
        lag=LagView((TopicLag("g", "t.topic", 4, 120, 75.0),), 0.0),
        backlog=[BacklogRow("region_outbox", 100_000, True, 3700.0)],
        schedules=[TableRows("schedule_run", ("schedule", "kind"), (("nightly", EVIL),))],
    )
    html = pages.status_page(status)
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "3.2/s" in html and "1m 15s" in html and "100,000+" in html and "1h 01m" in html
    assert 'http-equiv="refresh"' in html
    assert "schedule_run" in html and "nightly" in html


def test_status_page_says_why_lag_and_database_are_missing() -> None:
    status = pages.Status("w", [], [], LagView((), 0.0, "lag unavailable: <x>"), "db down", [])
    html = pages.status_page(status)
    assert "lag unavailable: &lt;x&gt;" in html and "db down" in html


def test_dead_letters_newest_first_filtered_and_paginated() -> None:
    many = [letter(i, reason="decode" if i % 2 else "instance_missing") for i in range(60)]
    page = paginate(many, Filters(reason="decode"), 1)
    assert page.matched == 30 and page.pages == 2
    assert [x.offset for x in page.letters][:3] == [59, 57, 55]
    assert page.reasons == ("decode", "instance_missing")
    last = paginate(many, Filters(reason="decode"), 99)
    assert last.number == 2 and len(last.letters) == 5
    since = paginate(many, Filters(since_ms=1_700_000_000_050), 1)
    assert since.matched == 10


def test_dead_letters_page_escapes_headers_and_offers_replay() -> None:
    bad = letter(7, message=EVIL)
    page = paginate([bad, letter(8)], Filters(), 1)
    html = pages.dead_letters_page(
        page,
        f=Filters(),
        since="",
        done={(0, 8): 1_700_000_000.0},
        can_replay={(0, 7): True, (0, 8): True},
        csrf="c0ffee",
        message=EVIL,
    )
    assert "<script>" not in html
    assert 'name="offset" value="7"' in html and 'value="c0ffee"' in html
    assert "replayed 2023-11-14" in html  # letter 8 was replayed: no button
    assert 'name="offset" value="8"' not in html


def test_config_page_shows_the_key_and_the_served_document() -> None:
    row = KeyRow(EVIL, 0, "", 1, "backend", "Backend", 0, 2, "acme", 0)
    html = pages.config_page(EVIL, row, Served(200, '{"disabled": false}'))
    assert "<script>" not in html
    assert "backend #1" in html and "HTTP 200" in html and "disabled" in html
    assert "No project key" in pages.config_page("nope", None, Served(404, ""))


def test_helpers() -> None:
    assert age(None) == "\u2014" and age(0.25) == "0.2s" and age(90061) == "1d 1h"
    assert base_url("0.0.0.0", 6066) == "http://127.0.0.1:6066"
    assert base_url("::1", 1) == "http://[::1]:1"
    clock = iter([0.0, 10.0]).__next__
    rates = RateSampler(clock=clock)
    rates.sample({"a": 5})
    assert rates.rate("a") is None
    rates.sample({"a": 25})
    assert rates.rate("a") == 2.0
