"""Alert rules: valid for promtool, and behaving as intended under promtool's unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from streams.ops import alerts
from tests.ops.conftest import K8S, ROOT, require_tool


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_rules_file_and_prometheus_rule_pass_promtool_check(tmp_path: Path) -> None:
    plain = promtool("check", "rules", str(K8S / "prometheus" / "rules.yml"))
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert f"SUCCESS: {len(alerts.alerts())} rules found" in plain.stdout
    # The PrometheusRule carries the same groups under spec:.
    operator = yaml.safe_load((K8S / "base" / "prometheus-rule.yaml").read_text())
    assert operator["spec"] == yaml.safe_load((K8S / "prometheus" / "rules.yml").read_text())
    extracted = tmp_path / "from-prometheus-rule.yml"
    extracted.write_text(yaml.safe_dump(operator["spec"]))
    checked = promtool("check", "rules", str(extracted))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alert_rules_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(ROOT / "tests" / "ops" / "rules_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_catches_a_broken_rule(tmp_path: Path) -> None:
    broken = alerts.rule_groups()
    broken["groups"][0]["rules"][0]["expr"] = "max by (group (kafka_consumergroup_group_lag"
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(broken))
    assert promtool("check", "rules", str(path)).returncode != 0
