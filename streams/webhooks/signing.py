"""Request signing: HMAC-SHA256 over the exact body bytes, with the target's secret.

The header names follow the system this replaces, so existing receivers keep
verifying: sentry-app webhooks carry ``Sentry-Hook-*`` headers, service hooks
``X-ServiceHook-*`` ones; both carry ``Request-ID`` (stable across attempts, so a
receiver can drop a duplicate).
"""

from __future__ import annotations

import hashlib
import hmac
import time

H_REQUEST_ID = "Request-ID"
H_RESOURCE = "Sentry-Hook-Resource"
H_TIMESTAMP = "Sentry-Hook-Timestamp"
H_SIGNATURE = "Sentry-Hook-Signature"
H_HOOK_GUID = "X-ServiceHook-GUID"
H_HOOK_TIMESTAMP = "X-ServiceHook-Timestamp"
H_HOOK_SIGNATURE = "X-ServiceHook-Signature"


def sign(body: bytes, secret: str) -> str:
    """Hex HMAC-SHA256 of ``body`` keyed with ``secret``."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, signature: str) -> bool:
    """Constant-time check of a signature, as a receiver would do it."""
    return hmac.compare_digest(sign(body, secret), signature)


def headers(
    *,
    kind: str,
    body: bytes,
    secret: str,
    request_id: str,
    resource: str,
    hook_guid: str = "",
    now: float | None = None,
) -> dict[str, str]:
    """The HTTP headers of one signed request to a target of ``kind``."""
    ts = str(int(now if now is not None else time.time()))
    signature = sign(body, secret)
    out = {"Content-Type": "application/json", H_REQUEST_ID: request_id, H_RESOURCE: resource}
    if kind == "service_hook":
        out.update({H_HOOK_GUID: hook_guid, H_HOOK_TIMESTAMP: ts, H_HOOK_SIGNATURE: signature})
    else:
        out.update({H_TIMESTAMP: ts, H_SIGNATURE: signature})
    return out
