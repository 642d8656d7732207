from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from streams.errors import ConfigurationError
from streams.settings import AGENT_NAMES, Settings, declared, markdown_table
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


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"STREAMS_WEB_PORT": "0"}, "STREAMS_WEB_PORT=0 must be >= 1"),
        ({"STREAMS_WEB_PORT": "70000"}, "STREAMS_WEB_PORT=70000 must be <= 65535"),
        ({"STREAMS_METRICS_PORT": "65536"}, "STREAMS_METRICS_PORT"),
        ({"STREAMS_LAG_EXPORTER_PORT": "-1"}, "STREAMS_LAG_EXPORTER_PORT"),
        ({"STREAMS_LOG_LEVEL": "chatty"}, "STREAMS_LOG_LEVEL='chatty': not a log level"),
        ({"STREAMS_LOG_FORMAT": "xml"}, "STREAMS_LOG_FORMAT"),
        ({"STREAMS_RELAY_BATCH_SIZE": "0"}, "STREAMS_RELAY_BATCH_SIZE"),
        ({"STREAMS_LAG_EXPORTER_GROUPS": "("}, "STREAMS_LAG_EXPORTER_GROUPS"),
        ({"STREAMS_CONSUMER_FAST_DRAIN": "maybe"}, "STREAMS_CONSUMER_FAST_DRAIN"),
        ({"DATABASE_URL": ""}, "DATABASE_URL is not set"),
        ({"STREAMS_GC_THRESHOLDS": "50000,20"}, "STREAMS_GC_THRESHOLDS='50000,20': expected"),
        ({"STREAMS_GC_THRESHOLDS": "0,1,1"}, "STREAMS_GC_THRESHOLDS"),
    ],
)
def test_bounds_and_names_are_checked(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(match)):
        Settings.from_env({**BASE, **env})


def test_gc_thresholds_are_set_by_a_worker_or_left_to_python() -> None:
    import gc

    from streams.heap import freeze_startup_heap

    assert Settings.from_env(BASE).gc_thresholds == (50_000, 20, 50)
    assert Settings.from_env({**BASE, "STREAMS_GC_THRESHOLDS": "python"}).gc_thresholds is None
    before = gc.get_threshold()
    try:
        freeze_startup_heap(
            Settings.from_env({**BASE, "STREAMS_GC_THRESHOLDS": "9000,5,7"}).gc_thresholds
        )
        assert gc.get_threshold() == (9000, 5, 7)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_ports_keep_zero_where_it_means_off_or_any() -> None:
    s = Settings.from_env({**BASE, "STREAMS_METRICS_PORT": "0", "STREAMS_LAG_EXPORTER_PORT": "0"})
    assert (s.metrics_port, s.lag_exporter_port) == (0, 0)


def test_unknown_agent_names_list_the_valid_ones() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({**BASE, "STREAMS_AGENTS": "buffers,bufers"})
    message = str(caught.value)
    assert "bufers" in message
    for name in AGENT_NAMES:
        assert name in message
    assert Settings.from_env({**BASE, "STREAMS_AGENTS": "none"}).agents == ()
    extension = {
        "STREAMS_AGENT_MODULES": "tests.support.probe_agent",
        "STREAMS_AGENTS": "probe_agent",
    }
    assert Settings.from_env({**BASE, **extension}).agents == ("probe_agent",)


def test_agent_names_match_the_builtin_agent_modules() -> None:
    from streams.agents import BUILTIN_AGENT_MODULES

    assert {m.rsplit(".", 1)[-1] for m in BUILTIN_AGENT_MODULES} == set(AGENT_NAMES)


def test_no_file_in_the_state_dir_supplies_addresses(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text(
        json.dumps({"kafka_bootstrap_servers": "stray:9092", "database_url": "postgresql://x"})
    )
    with pytest.raises(ConfigurationError, match="KAFKA_BOOTSTRAP_SERVERS is not set"):
        Settings.from_env({"STREAMS_STATE_DIR": str(tmp_path), "DATABASE_URL": "postgresql://x"})


def test_to_env_round_trips_every_setting() -> None:
    s = Settings.from_env(BASE).with_(
        silo_mode=SiloMode.CONTROL,
        schema_registry_url="http://registry:8081",
        agents=(),
        agent_modules=("my.agents",),
        consumer_fetch_max_wait=0.1,
        consumer_fast_drain=False,
        relay_poll_interval=0.05,
        ssrf_allow=("127.0.0.1", "::1"),
        region_names=("eu", "us"),
        log_format="json",
    )
    env = s.to_env()
    assert Settings.from_env(env) == s
    assert env["STREAMS_AGENTS"] == "none"
    assert env["DATABASE_URL"] == BASE["DATABASE_URL"]  # for children, never printed
    # Unset optional values come back unset, even over a parent's environment.
    plain = Settings.from_env(BASE)
    inherited = {"STREAMS_AGENTS": "buffers", "SCHEMA_REGISTRY_URL": "http://x"}
    assert Settings.from_env({**inherited, **plain.to_env()}) == plain


def test_every_field_is_declared_once_with_a_distinct_variable() -> None:
    names = [decl.env for _, decl in declared()]
    assert len(names) == len(set(names))
    table = markdown_table()
    for name in names:
        assert f"| `{name}` |" in table
    assert "| `STREAMS_RELAY_CONCURRENCY` | `1` |" in table


def test_relay_help_shows_the_real_concurrency_default(capsys: pytest.CaptureFixture[str]) -> None:
    from streams.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["relay", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"$STREAMS_RELAY_CONCURRENCY, else `{Settings.from_env(BASE).relay_concurrency}`" in out


def test_unless_set_gives_way_to_the_environment() -> None:
    env = {**BASE, "STREAMS_KAFKA_SESSION_TIMEOUT": "20", "STREAMS_CONSUMER_FETCH_MAX_WAIT": ""}
    s = Settings.from_env(env).unless_set(
        env, kafka_session_timeout=6.0, consumer_fetch_max_wait=0.1
    )
    assert (s.kafka_session_timeout, s.consumer_fetch_max_wait) == (20.0, 0.1)


def test_readme_configuration_table_is_generated_from_the_declarations() -> None:
    """The README's configuration section holds the generated table verbatim, so a new or
    changed setting cannot be left undocumented."""
    from pathlib import Path

    from streams.settings import markdown_table

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert markdown_table().strip() in readme, (
        "README.md's configuration table is stale: paste the output of "
        "`python -c 'from streams.settings import markdown_table; print(markdown_table())'`"
    )
