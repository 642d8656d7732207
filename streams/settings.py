"""Settings, read from the environment once at start-up into a frozen object.

Each field of ``Settings`` is declared once, with its environment variable, parser,
bounds, default, component group and whether it is a secret (``Declaration``). The one
loader (``Settings.from_env``), the way back to an environment (``Settings.to_env``),
the ``--help`` defaults and the README's configuration table (``markdown_table``) all
read those declarations. Adding a setting means adding one field, in
``settings_core`` (Kafka, database, process, logging) or ``settings_components``.

Nothing on the per-message path re-reads the environment: components receive the
``Settings`` instance (or the values they need) when they are built.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, fields, replace
from typing import Any

from streams.errors import ConfigurationError
from streams.settings_components import ComponentSettings
from streams.settings_core import CoreSettings
from streams.settings_parse import AGENT_NAMES, Declaration, Group, Secret

__all__ = ["AGENT_NAMES", "Group", "Secret", "Settings", "get_settings", "reset_settings"]

# Variables that changed meaning: refused with how to say it now, never misread.
RETIRED = {
    "STREAMS_WEBHOOK_MAX_ATTEMPTS": "set STREAMS_WEBHOOK_MAX_RETRIES instead, the retries "
    "after the first attempt (MAX_ATTEMPTS=N is MAX_RETRIES=N-1; the default 5 retries "
    "means 6 attempts)",
}


@dataclass(frozen=True, kw_only=True)
class Settings(ComponentSettings, CoreSettings):
    """Every knob of streams (fields declared in ``settings_core`` and
    ``settings_components``); see ``markdown_table()`` for the variables."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Validate the environment once; raises ``ConfigurationError`` naming the variable.

        Only the environment counts: no file in the working directory supplies a value.
        """
        env = os.environ if env is None else env
        for retired, why in RETIRED.items():
            if env.get(retired, "") != "":
                raise ConfigurationError(f"{retired} is no longer read: {why}")
        values = {f.name: read(f.name, env) for f in fields(cls)}
        values = {k: v for k, v in values.items() if v is not MISSING}
        settings = cls(**values)
        _check_agents(settings)
        return settings

    def to_env(self) -> dict[str, str]:
        """The environment that makes ``from_env`` return these settings (secrets included:
        this is for child processes, never for printing)."""
        return {decl.env: decl.parser.render(getattr(self, f.name)) for f, decl in declared()}

    def with_(self, **changes: Any) -> Settings:
        """A copy with some values changed (tests and the CLI use this)."""
        return replace(self, **changes)

    def unless_set(self, env: Mapping[str, str], **defaults: Any) -> Settings:
        """A copy with ``defaults`` for the fields whose variable ``env`` leaves unset
        (``streams up``'s values for the embedded stack: the environment wins)."""
        unset = {k: v for k, v in defaults.items() if not env.get(declaration(k).env)}
        return replace(self, **unset)


def declared() -> list[tuple[Field[Any], Declaration]]:
    """Every field of ``Settings`` with its declaration, in declaration order."""
    return [(f, f.metadata["setting"]) for f in fields(Settings)]


def declaration(name: str) -> Declaration:
    """The declaration of one ``Settings`` field."""
    for f, decl in declared():
        if f.name == name:
            return decl
    raise KeyError(name)


def default(name: str) -> Any:
    """The default value of one ``Settings`` field (``MISSING`` when it has none)."""
    for f, _ in declared():
        if f.name == name:
            return f.default_factory() if f.default_factory is not MISSING else f.default
    raise KeyError(name)


def read(name: str, env: Mapping[str, str] | None = None) -> Any:
    """One field's value from the environment (its default when unset or empty); for
    commands that start before the whole of ``Settings`` can be validated."""
    env = os.environ if env is None else env
    decl = declaration(name)
    raw = env.get(decl.env, "")
    if raw == "":
        if decl.required:
            raise ConfigurationError(f"{decl.env} is not set ({decl.required})")
        return default(name)
    return decl.load(raw)


def help_default(name: str) -> str:
    """``--help`` text for an option that defaults to a setting: its variable and default."""
    decl = declaration(name)
    return f"default: ${decl.env}, else {decl.shown_default(default(name))}"


def _check_agents(settings: Settings) -> None:
    """``STREAMS_AGENTS`` names built-in agents, or extension modules named alongside."""
    if settings.agents is None:
        return
    known = (*AGENT_NAMES, *(m.rsplit(".", 1)[-1] for m in settings.agent_modules))
    unknown = [a for a in settings.agents if a not in known]
    if unknown:
        raise ConfigurationError(
            f"STREAMS_AGENTS names unknown agents {', '.join(unknown)}; "
            f"known: {', '.join(known)} (or none)"
        )


def markdown_table() -> str:
    """The README's configuration table, one section per component group."""
    rows: list[str] = []
    for group in Group:
        decls = [(f, d) for f, d in declared() if d.group is group]
        if not decls:
            continue
        rows += [
            "",
            f"**{group.value}**",
            "",
            "| variable | default | meaning |",
            "| --- | --- | --- |",
        ]
        for f, decl in decls:
            shown = "required" if decl.required else decl.shown_default(default(f.name))
            doc = decl.doc.replace("|", "\\|")  # a bar would end the table cell
            rows.append(f"| `{decl.env}` | {shown} | {doc}{decl.bounds_text()} |")
    return "\n".join(rows).strip() + "\n"


_cached: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, validated on first use."""
    global _cached
    if _cached is None:
        _cached = Settings.from_env()
    return _cached


def reset_settings(settings: Settings | None = None) -> None:
    """Replace (or forget) the process-wide settings; for tests and the CLI."""
    global _cached
    _cached = settings
