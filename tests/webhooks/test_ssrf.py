"""The SSRF guard: internal addresses refused before any connection, allow-list honoured."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from streams.webhooks.ssrf import GuardedResolver, SsrfGuard, SsrfRefused


class FakeResolver(AbstractResolver):
    """Answers from a table and counts lookups (no network)."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        if host not in self.table:
            raise OSError(f"no such host {host}")
        return [
            ResolveResult(hostname=host, host=a, port=port, family=socket.AF_INET, proto=0, flags=0)
            for a in self.table[host]
        ]

    async def close(self) -> None:
        return None


def check(guard: SsrfGuard, url: str) -> None:
    asyncio.run(guard.check_url(url))


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://10.0.0.1/hook", "private"),
        ("http://192.168.1.5/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://127.0.0.1:8080/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:10.0.0.1]/", "private"),
        ("http://224.0.0.1/", "multicast"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://240.0.0.1/", "reserved"),
        ("http://[fe80::1]/", "link-local"),
        ("http://100.64.0.1/", "not global"),
    ],
)
def test_internal_literal_addresses_are_refused_without_lookup(url: str, why: str) -> None:
    resolver = FakeResolver({})
    with pytest.raises(SsrfRefused, match=why):
        check(SsrfGuard(resolver=resolver), url)
    assert resolver.lookups == []


def test_public_address_and_public_name_pass() -> None:
    resolver = FakeResolver({"hooks.example.com": ["93.184.216.34"]})
    guard = SsrfGuard(resolver=resolver)
    check(guard, "https://93.184.216.34/x")
    check(guard, "https://hooks.example.com/x")
    check(guard, "https://hooks.example.com/y")
    assert resolver.lookups == ["hooks.example.com"]  # cached


def test_name_resolving_to_any_internal_address_is_refused() -> None:
    resolver = FakeResolver({"sneaky.example.com": ["93.184.216.34", "10.1.2.3"]})
    with pytest.raises(SsrfRefused, match=r"sneaky.example.com resolves to 10.1.2.3"):
        check(SsrfGuard(resolver=resolver), "http://sneaky.example.com/")


def test_bad_scheme_missing_host_and_unresolvable_name_are_refused() -> None:
    guard = SsrfGuard(resolver=FakeResolver({}))
    for url in ("file:///etc/passwd", "ftp://example.com/", "http:///nohost", "http://nx.test/"):
        with pytest.raises(SsrfRefused):
            check(guard, url)


def test_allow_list_by_address_network_and_host() -> None:
    resolver = FakeResolver({"hooks.internal": ["10.9.9.9"], "other.internal": ["10.8.0.1"]})
    guard = SsrfGuard(["127.0.0.1", "10.9.0.0/16", "Build.Local"], resolver=resolver)
    check(guard, "http://127.0.0.1:9000/")
    check(guard, "http://10.9.1.1/")
    check(guard, "http://hooks.internal/")
    check(guard, "http://build.local/")  # allow-listed by name, never resolved
    assert "build.local" not in resolver.lookups
    with pytest.raises(SsrfRefused):
        check(guard, "http://127.0.0.2/")
    with pytest.raises(SsrfRefused):
        check(guard, "http://other.internal/")


def test_guarded_resolver_refuses_at_connect_time() -> None:
    # DNS rebinding: the name resolved to a public address at check time, and to an
    # internal one when the client connects.
    inner = FakeResolver({"rebind.example.com": ["169.254.169.254"]})
    resolver = GuardedResolver(SsrfGuard(), inner)
    with pytest.raises(SsrfRefused, match="link-local"):
        asyncio.run(resolver.resolve("rebind.example.com", 80))


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com\\@127.0.0.1/hook",  # a backslash: before, retried as an error
        "http://93.184.215.14/a\\b",
        "http://93.184.215.14:99999/",
        "http://93.184.215.14:port/",
        "http://exa mple.com/",
        "http://93.184.215.14/\r\nX-Injected: 1",
        "http://93.184.215.14/" + "a" * 3000,
    ],
)
def test_malformed_urls_are_refused_before_any_lookup(url: str) -> None:
    resolver = FakeResolver({"example.com": ["93.184.215.14"]})
    with pytest.raises(SsrfRefused, match=r"malformed|longer"):
        check(SsrfGuard(resolver=resolver), url)
    assert resolver.lookups == []


def test_a_url_the_http_client_cannot_use_is_a_refusal_not_a_retry() -> None:
    from streams.webhooks.http import AiohttpSender

    async def post() -> object:
        sender = AiohttpSender(SsrfGuard(allow=["127.0.0.0/8"]))
        try:
            return await sender.post("http://127.0.0.1:99999/", b"{}", {}, 1.0)
        finally:
            await sender.close()

    result = asyncio.run(post())
    assert getattr(result, "refused", False) and "malformed" in str(getattr(result, "error", ""))
