"""Request signing: HMAC-SHA256 over the body, header sets per target kind."""

from __future__ import annotations

from streams.webhooks import signing


def test_signature_is_hmac_sha256_rfc4231_vector() -> None:
    # RFC 4231, test case 2.
    body = b"what do ya want for nothing?"
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert signing.sign(body, "Jefe") == expected
    assert signing.verify(body, "Jefe", expected)
    assert not signing.verify(body + b" ", "Jefe", expected)
    assert not signing.verify(body, "jefe", expected)


def test_sentry_app_headers() -> None:
    h = signing.headers(
        kind="sentry_app", body=b"{}", secret="s", request_id="r-1", resource="issue", now=1700
    )
    assert h == {
        "Content-Type": "application/json",
        "Request-ID": "r-1",
        "Sentry-Hook-Resource": "issue",
        "Sentry-Hook-Timestamp": "1700",
        "Sentry-Hook-Signature": signing.sign(b"{}", "s"),
    }


def test_service_hook_headers_carry_the_guid() -> None:
    h = signing.headers(
        kind="service_hook",
        body=b"{}",
        secret="s",
        request_id="r-2",
        resource="error",
        hook_guid="g-1",
        now=1700.9,
    )
    assert h[signing.H_HOOK_GUID] == "g-1"
    assert h[signing.H_HOOK_TIMESTAMP] == "1700"
    assert h[signing.H_HOOK_SIGNATURE] == signing.sign(b"{}", "s")
    assert signing.H_SIGNATURE not in h
