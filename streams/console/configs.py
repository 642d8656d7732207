"""Project-config lookup by public key: the key's rows in PostgreSQL and the document
the pipeline serves for it.

The served document comes from the worker's own ``/api/project-configs/{key}``
endpoint, which answers from the partition owner's table (or forwards there), so the
console shows exactly what a client would get.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from psycopg import AsyncConnection

TIMEOUT = 3.0
KEY_SQL = """
SELECT pk.public_key, pk.status, pk.label, p.id, p.slug, p.name, p.status,
       o.id, o.slug, o.status
FROM project_key pk
JOIN project p ON p.id = pk.project_id
JOIN organization o ON o.id = p.organization_id
WHERE pk.public_key = %s
"""


@dataclass(frozen=True)
class KeyRow:
    public_key: str
    key_status: int
    label: str
    project_id: int
    project_slug: str
    project_name: str
    project_status: int
    organization_id: int
    organization_slug: str
    organization_status: int


@dataclass(frozen=True)
class Served:
    status: int  # HTTP status of the served-config endpoint; 0 when it did not answer
    body: str  # pretty-printed JSON when it is JSON, else the text or the error


async def key_row(conn: AsyncConnection[Any], public_key: str) -> KeyRow | None:
    """The key, its project and organization, or None for an unknown key."""
    cur = await conn.execute(KEY_SQL, (public_key,))
    row = await cur.fetchone()
    return KeyRow(*row) if row else None


def base_url(host: str, port: int) -> str:
    """Where this worker's web server answers (a wildcard bind answers on loopback)."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def served(base: str, public_key: str) -> Served:
    """The served document for ``public_key`` (status and body), never raising."""
    url = f"{base}/api/project-configs/{quote(public_key, safe='')}"
    try:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
            text = await resp.text()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Served(0, f"no answer from {url}: {exc!r}")
    with contextlib.suppress(ValueError):
        text = json.dumps(json.loads(text), indent=2, sort_keys=True)
    return Served(status, text)
