"""SSRF guard: webhook targets must resolve to public addresses.

A target whose host is, or resolves to, a loopback, private, link-local, multicast,
reserved or unspecified address is refused before any connection is made, unless
the host or the address is allow-listed (``STREAMS_WEBHOOK_ALLOW_HOSTS``: host
names, addresses or CIDR networks). The same check runs again inside the HTTP
client's resolver at connect time, so a name that re-resolves to an internal
address between the check and the connection (DNS rebinding) is refused too.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from streams.errors import StreamsError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Resolutions are cached briefly: per-request getaddrinfo would cost a thread hop.
CACHE_SECONDS = 10.0
MAX_CACHED = 10_000


class SsrfRefused(StreamsError, OSError):
    """The target may not be contacted (internal address, bad scheme, no host)."""


def forbidden_reason(addr: IPAddress) -> str | None:
    """Why ``addr`` is not a public address, or None when it is."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    # Most specific first: Python counts link-local and loopback as private too.
    for label, flag in (
        ("loopback", addr.is_loopback),
        ("link-local", addr.is_link_local),
        ("multicast", addr.is_multicast),
        ("unspecified", addr.is_unspecified),
        ("reserved", addr.is_reserved),
        ("private", addr.is_private),
    ):
        if flag:
            return label
    return None if addr.is_global else "not global"


class SsrfGuard:
    """Decides whether a URL may be contacted; see the module docstring."""

    def __init__(self, allow: Iterable[str] = (), resolver: AbstractResolver | None = None) -> None:
        self._hosts: set[str] = set()
        self._networks: list[IPNetwork] = []
        for entry in allow:
            try:
                self._networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                self._hosts.add(entry.strip().lower().rstrip("."))
        self._resolver = resolver
        self._cache: dict[str, tuple[float, list[str]]] = {}
        self._verdicts: dict[str, tuple[float, SsrfRefused | None]] = {}

    def host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self._hosts

    def address_allowed(self, addr: IPAddress) -> bool:
        return any(addr in net for net in self._networks if net.version == addr.version)

    def check_address(self, host: str, address: str) -> None:
        """Raise ``SsrfRefused`` unless ``address`` (resolved from ``host``) may be contacted."""
        addr = ipaddress.ip_address(address.split("%", 1)[0])
        reason = forbidden_reason(addr)
        if reason is None or self.host_allowed(host) or self.address_allowed(addr):
            return
        where = f"{addr} is" if host == address else f"{host} resolves to {addr},"
        raise SsrfRefused(f"{where} a {reason} address; not allow-listed")

    async def check_url(self, url: str) -> None:
        """Raise ``SsrfRefused`` unless ``url`` is http(s) to a host that may be contacted.

        A literal address is decided without any I/O; a name is resolved. Verdicts
        are cached for ``CACHE_SECONDS`` (the connect-time check still runs).
        """
        now = time.monotonic()
        hit = self._verdicts.get(url)
        if hit is not None and hit[0] > now:
            if hit[1] is not None:
                raise hit[1]
            return
        if len(self._verdicts) >= MAX_CACHED:
            self._verdicts.clear()
        try:
            await self._check_url(url)
        except SsrfRefused as exc:
            self._verdicts[url] = (now + CACHE_SECONDS, exc)
            raise
        self._verdicts[url] = (now + CACHE_SECONDS, None)

    async def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise SsrfRefused(f"scheme {parts.scheme!r} is not allowed (http or https only)")
        malformed_reason(url)
        host = parts.hostname
        if not host:
            raise SsrfRefused(f"URL {url!r} has no host")
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            for address in await self._resolve(host):
                self.check_address(host, address)
            return
        self.check_address(host, host)

    async def _resolve(self, host: str) -> list[str]:
        if self.host_allowed(host):
            return []
        now = time.monotonic()
        hit = self._cache.get(host)
        if hit is not None and hit[0] > now:
            return hit[1]
        resolver = self._resolver or ThreadedResolver()
        try:
            results = await resolver.resolve(host, 0, socket.AF_UNSPEC)
        except OSError as exc:
            raise SsrfRefused(f"{host} does not resolve: {exc}") from exc
        addresses = [r["host"] for r in results]
        self._cache[host] = (now + CACHE_SECONDS, addresses)
        return addresses


_MAX_URL = 2048


def malformed_reason(url: str) -> None:
    """Raise ``SsrfRefused`` for a URL that parsers read differently or not at all.

    A backslash, whitespace or a control character can make the host that ``urlsplit``
    checks and the host the HTTP client connects to disagree, or the client refuses
    the URL at each attempt (which looked like a connection error and was retried):
    such a URL, or one with a bad port, is refused before the first attempt.
    """
    if len(url) > _MAX_URL:
        raise SsrfRefused(f"URL longer than {_MAX_URL} characters")
    for ch in url:
        if ch == "\\" or ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise SsrfRefused(f"URL {url[:200]!r} holds {ch!r}: malformed")
    try:
        urlsplit(url).port  # noqa: B018 (raises on a malformed port)
        if not yarl.URL(url).host:
            raise ValueError("the HTTP client finds no host")
    except ValueError as exc:
        raise SsrfRefused(f"URL {url[:200]!r} is malformed: {exc}") from exc


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that refuses names resolving to forbidden addresses."""

    def __init__(self, guard: SsrfGuard, inner: AbstractResolver | None = None) -> None:
        self._guard = guard
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for r in results:
            self._guard.check_address(host, r["host"])
        return results

    async def close(self) -> None:
        await self._inner.close()


def refused_in(exc: BaseException) -> SsrfRefused | None:
    """The ``SsrfRefused`` behind an aiohttp connection error, if that is what it was."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, SsrfRefused):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
