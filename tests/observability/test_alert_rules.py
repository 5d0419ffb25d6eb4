"""The alert rules pass promtool's checks and their unit tests, and name only metrics we export."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.observability.metric_names import exported_names, referenced_names

OPS = Path(__file__).resolve().parents[2] / "ops" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian: apt-get install -y prometheus); CI installs it",
)


def promtool(*args: str) -> str:
    done = subprocess.run([PROMTOOL or "promtool", *args], cwd=OPS, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@needs_promtool
def test_the_alert_rules_pass_promtool_check():
    assert "SUCCESS" in promtool("check", "rules", "alerts.yml")


@needs_promtool
def test_the_alert_rules_pass_their_unit_tests():
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


@needs_promtool
def test_the_example_prometheus_config_is_valid():
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")


def rules() -> list[dict[str, str]]:
    return [rule for group in yaml.safe_load((OPS / "alerts.yml").read_text())["groups"] for rule in group["rules"]]


def test_every_alert_the_issue_asks_for_is_there_with_a_severity_and_a_summary():
    alerts = {r["alert"]: r for r in rules() if "alert" in r}
    assert {
        "PipelineQueueGrowing",
        "PipelineEndToEndSlow",
        "PipelineDeadLettersGrowing",
        "ClaudeRateLimited",
        "ReviewsOverSla",
        "ModelSpendProjectedOverBudget",
        "ModelSpendOverBudget",
    } <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"], name


def test_every_alert_has_a_unit_test():
    tested = set(re.findall(r"alertname: (\w+)", (OPS / "alerts_test.yml").read_text()))
    assert tested == {r["alert"] for r in rules() if "alert" in r}


def test_the_rules_name_only_metrics_the_product_exports(db):
    recorded = {r["record"] for r in rules() if "record" in r}
    used = set().union(*(referenced_names(r["expr"]) for r in rules()))
    assert used - recorded - {"up"} <= exported_names()
