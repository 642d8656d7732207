from __future__ import annotations

import pytest

from streams.errors import ConfigurationError
from streams.settings import Settings
from streams.silo import SiloMode

BASE = {
    "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
    "DATABASE_URL": "postgresql://u:pw@h/db",
    "STREAMS_STATE_DIR": "/nonexistent-streams-state",
}


def test_reads_and_validates_environment() -> None:
    s = Settings.from_env(
        {
            **BASE,
            "STREAMS_SILO_MODE": "Region",
            "STREAMS_WEB_PORT": "7000",
            "STREAMS_TOPIC_PREFIX": "tenant-a.",
        }
    )
    assert s.silo_mode is SiloMode.REGION
    assert s.web_port == 7000
    assert s.topic_prefix == "tenant-a."


def test_database_url_is_secret_in_repr() -> None:
    s = Settings.from_env(BASE)
    assert "pw" not in repr(s)
    assert s.database_url.get() == BASE["DATABASE_URL"]


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"STREAMS_SILO_MODE": "moon"}, "STREAMS_SILO_MODE"),
        ({"STREAMS_WEB_PORT": "many"}, "STREAMS_WEB_PORT"),
        ({"STREAMS_TOPIC_PREFIX": "a b"}, "STREAMS_TOPIC_PREFIX"),
        ({"KAFKA_BOOTSTRAP_SERVERS": ""}, "KAFKA_BOOTSTRAP_SERVERS"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        Settings.from_env({**BASE, **env})


def test_settings_are_frozen() -> None:
    s = Settings.from_env(BASE)
    with pytest.raises(AttributeError):
        s.web_port = 1  # type: ignore[misc]
