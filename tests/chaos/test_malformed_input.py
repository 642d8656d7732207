"""Input that could never be delivered is refused at the call, where the caller can react."""

from __future__ import annotations

import pytest

from streams.client import schedule_invalidate_project_config


def test_an_oversized_public_key_is_a_type_error_at_the_client() -> None:
    # Before: a 400 kB key was published, retried for 3.5 minutes (the message with the
    # key repeated in a header exceeded 1 MB), then dead-lettered.
    with pytest.raises(TypeError, match="at most 256"):
        schedule_invalidate_project_config(public_key="k" * 400_000, trigger="test")
