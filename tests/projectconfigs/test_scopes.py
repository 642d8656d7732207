"""Scope validation and keys (no database)."""

from __future__ import annotations

import pytest

from streams.projectconfigs.scopes import Scope, ScopeKind, scope_of, validate_scope


@pytest.mark.parametrize(
    ("org", "project", "key"),
    [(None, None, None), (1, 2, None), (1, None, "k"), (None, 2, "k"), (1, 2, "k")],
)
def test_anything_but_exactly_one_scope_is_a_type_error(
    org: int | None, project: int | None, key: str | None
) -> None:
    with pytest.raises(TypeError, match="exactly one of"):
        validate_scope(org, project, key)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1.0, None, None), "organization_id must be an int"),
        ((None, "2", None), "project_id must be an int"),
        ((None, True, None), "project_id must be an int"),
        ((None, None, b"k"), "public_key must be a non-empty str"),
        ((None, None, ""), "public_key must be a non-empty str"),
    ],
)
def test_a_scope_of_the_wrong_type_is_a_type_error(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        validate_scope(*args)


def test_keys_cover_widest_first_and_partition_by_organization() -> None:
    key = Scope(ScopeKind.PUBLIC_KEY, organization_id=1, project_id=2, public_key="abc")
    assert [k for _, k in key.covering()] == ["o:1", "p:2", "k:abc"]
    assert key.message_key == "1"
    project = Scope(ScopeKind.PROJECT, organization_id=1, project_id=2)
    assert [k for _, k in project.covering()] == ["o:1", "p:2"]
    # A deleted key: no organization to partition by, nothing can cover it but itself.
    gone = Scope(ScopeKind.PUBLIC_KEY, public_key="abc")
    assert gone.message_key == "k:abc"
    assert [k for _, k in gone.covering()] == ["k:abc"]


def test_a_request_whose_fields_contradict_its_scope_is_refused() -> None:
    with pytest.raises(ValueError, match="project scope without"):
        scope_of({"scope": "project", "organization_id": 1, "project_id": None})
    with pytest.raises(ValueError):
        scope_of({"scope": "galaxy", "organization_id": 1})
