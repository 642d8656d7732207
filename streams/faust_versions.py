"""The library versions streams' Faust patches were verified on, checked at start-up.

``streams/faust_drain.py`` replaces a private call of Faust's consumer loop and
``streams/faust_fetch.py`` sets a private attribute of the aiokafka consumer Faust
builds. Both were read against, and tested on, exactly the versions below (also
pinned in ``pyproject.toml``); ``tests/test_faust_versions.py`` fails when the
patched source changes. A process that finds other versions installed does not
patch: it logs ``faust.patch.unverified`` (ERROR) naming both sets of versions and
runs Faust's own code, which is slower but correct.
"""

from __future__ import annotations

import logging
from importlib import metadata

log = logging.getLogger(__name__)

DRAIN_VERIFIED = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1"}
FETCH_VERIFIED = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}


def installed(names: dict[str, str]) -> dict[str, str]:
    """The installed version of each distribution named (``missing`` if none)."""
    found: dict[str, str] = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


def verified(patch: str, wanted: dict[str, str]) -> bool:
    """True if every distribution is at its verified version; else log why, loudly."""
    have = installed(wanted)
    if have == wanted:
        return True
    log.error(
        "faust.patch.unverified",
        extra={
            "patch": patch,
            "installed": ", ".join(f"{k} {v}" for k, v in have.items()),
            "verified": ", ".join(f"{k} {v}" for k, v in wanted.items()),
            "fallback": "Faust's own code (slower); re-verify the patch and update "
            "streams/faust_versions.py",
        },
    )
    return False
