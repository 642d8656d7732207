"""Silo modes: a deployment runs as the region silo, the control silo, or both (monolith)."""

from __future__ import annotations

import enum


class SiloMode(enum.StrEnum):
    REGION = "region"
    CONTROL = "control"
    MONOLITH = "monolith"

    def allows(self, owners: frozenset[SiloMode]) -> bool:
        """Whether code owned by ``owners`` may run in this silo (monolith runs everything)."""
        return self is SiloMode.MONOLITH or self in owners or SiloMode.MONOLITH in owners


ALL_SILOS: frozenset[SiloMode] = frozenset({SiloMode.REGION, SiloMode.CONTROL})
REGION_ONLY: frozenset[SiloMode] = frozenset({SiloMode.REGION})
CONTROL_ONLY: frozenset[SiloMode] = frozenset({SiloMode.CONTROL})
