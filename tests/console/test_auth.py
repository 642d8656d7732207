"""The console token and the replay form's CSRF check (no server needed)."""

from __future__ import annotations

from streams.console.auth import Credentials, Guard


def test_without_a_token_everything_is_allowed() -> None:
    assert Guard(None).allows(Credentials())
    assert not Guard(None).logs_in(Credentials(query="x"))


def test_the_token_in_a_header_cookie_or_query() -> None:
    g = Guard("s3cret")
    assert not g.allows(Credentials())
    assert not g.allows(Credentials(authorization="Bearer wrong", cookie="nope", query="x"))
    assert g.allows(Credentials(authorization="Bearer s3cret"))
    assert g.allows(Credentials(authorization="bearer  s3cret "))
    assert not g.allows(Credentials(authorization="Basic s3cret"))
    assert g.allows(Credentials(cookie="s3cret"))
    assert g.allows(Credentials(query="s3cret"))
    assert g.logs_in(Credentials(query="s3cret"))
    assert not g.logs_in(Credentials(cookie="s3cret"))


def test_csrf_needs_the_field_and_a_same_origin() -> None:
    g = Guard("s3cret")
    good = g.csrf_token()
    assert good == g.csrf_token() and good != Guard("s3cret").csrf_token()  # per process
    host = "127.0.0.1:6066"
    assert g.csrf_ok(good, {"Origin": "http://127.0.0.1:6066"}, host)
    assert g.csrf_ok(good, {}, host)  # curl: no Origin, no Sec-Fetch-Site
    assert not g.csrf_ok("", {}, host)
    assert not g.csrf_ok(good, {"Origin": "http://evil.example"}, host)
    assert not g.csrf_ok(good, {"Origin": "null"}, host)
    assert not g.csrf_ok(good, {"Sec-Fetch-Site": "cross-site"}, host)
