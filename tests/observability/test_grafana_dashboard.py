"""The Grafana dashboard: valid JSON, every query valid PromQL over metrics the product exports."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.observability.metric_names import exported_names, referenced_names

DASHBOARD = Path(__file__).resolve().parents[2] / "ops" / "grafana" / "dashboard.json"


def panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def queries() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def test_the_dashboard_is_importable_json_with_unique_ids_and_a_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] == "agent-pipeline"
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels())


def test_the_dashboard_shows_what_the_issue_asks_for():
    used = set().union(*(referenced_names(q) for q in queries()))
    for name in (
        "pipeline_stage_duration_seconds_bucket",
        "pipeline_stage_duration_seconds_count",
        "pipeline_end_to_end_seconds_bucket",
        "pipeline_escalations_total",
        "pipeline_tier_fallbacks_total",
        "pipeline_confidence_bucket",
        "pipeline_queue_depth",
        "pipeline_dead_letters_pending",
        "pipeline_review_backlog",
        "pipeline_review_oldest_age_seconds",
        "pipeline_model_calls_total",
        "pipeline_tokens_total",
        "pipeline_cost_usd_total",
        "pipeline_llm_rate_limited_total",
        "pipeline_rate_limiter_wait_seconds_bucket",
        "django_http_responses_total_by_status_total",
    ):
        assert name in used, name


def test_the_dashboard_queries_name_only_metrics_the_product_exports(db):
    used = set().union(*(referenced_names(q) for q in queries()))
    ours = {n for n in used if n.startswith("pipeline_")}
    assert ours <= exported_names()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (apt-get install prometheus)")
def test_every_dashboard_query_is_valid_promql(tmp_path):
    # promtool has no expression checker; a recording rule per query gets each one parsed.
    exprs = [q.replace("$__rate_interval", "5m") for q in queries()]
    rules = {
        "groups": [
            {"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)]}
        ]
    }
    (tmp_path / "dashboard_rules.yml").write_text(yaml.safe_dump(rules))
    done = subprocess.run(
        ["promtool", "check", "rules", str(tmp_path / "dashboard_rules.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
