"""compose.yaml, checked without an engine: the compose-spec JSON schema (vendored by the
check-jsonschema package), then the stack's own rules: one image for every role, the roles'
queues, exactly one beat, grace longer than a task's time limit, health checks, the init step, and
Prometheus and Grafana wired to the project's alert rules and dashboard."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import check_jsonschema
import jsonschema
import pytest
import yaml

from tests.deploy.topology import (
    ROLES,
    ROOT,
    declared_queues,
    hand_listed_queues,
    procfile,
    task_time_limit,
    worker_queues,
)

COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
APP = {name: s for name, s in SERVICES.items() if s.get("build") == "."}
SCHEMA = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"


def seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration))


def test_compose_yaml_is_valid_against_the_compose_spec_schema():
    schema = json.loads(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(COMPOSE), key=str)
    assert errors == [], [f"{list(e.absolute_path)}: {e.message}" for e in errors]


def test_a_schema_violation_is_caught():
    schema = json.loads(SCHEMA.read_text())
    broken = {"services": {"web": {"image": "x", "ports": {"not": "a list"}}}}
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_every_role_runs_from_the_one_image():
    assert {"init", "web", "beat", "flower", *ROLES} <= set(APP)
    assert len({s["image"] for s in APP.values()}) == 1


def test_the_worker_roles_consume_the_topologys_queues_and_together_every_queue():
    consumed = {name: worker_queues(s["command"]) for name, s in APP.items() if worker_queues(s["command"])}
    assert consumed == ROLES
    assert frozenset().union(*consumed.values()) == declared_queues()


def test_no_service_lists_queues_by_hand():
    assert not [name for name, s in APP.items() if hand_listed_queues(s["command"])]


def test_exactly_one_beat_and_workers_get_longer_than_a_task_to_finish():
    beats = [name for name, s in APP.items() if "beat" in s["command"]]
    assert beats == ["beat"] and "replicas" not in SERVICES["beat"].get("deploy", {})
    for role in ROLES:
        assert seconds(SERVICES[role]["stop_grace_period"]) > task_time_limit(), role
        assert "deploy/worker-alive" in SERVICES[role]["healthcheck"]["test"], role
    assert "/readyz" in " ".join(SERVICES["web"]["healthcheck"]["test"])


def test_the_init_step_runs_first_and_every_app_service_waits_for_it():
    assert SERVICES["init"]["command"] == ["deploy/init"]
    for name, service in APP.items():
        if name != "init":
            assert service["depends_on"]["init"]["condition"] == "service_completed_successfully", name


def test_prometheus_loads_the_projects_alert_rules_and_grafana_its_dashboard():
    mounts = {v.split(":")[0]: v.split(":")[1] for v in SERVICES["prometheus"]["volumes"] if v.startswith("./")}
    assert mounts["./ops/prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    grafana = [v.split(":")[0] for v in SERVICES["grafana"]["volumes"]]
    assert "./ops/grafana/dashboard.json" in grafana
    for path in [*mounts, *grafana]:
        if path.startswith("./"):
            assert (ROOT / path).exists(), path


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (CI installs it)")
def test_the_compose_prometheus_config_passes_promtool(tmp_path):
    config = (ROOT / "deploy" / "compose" / "prometheus.yml").read_text()
    for secret in re.findall(r"/run/secrets/(\w+)", config):  # compose mounts them; promtool opens them
        (tmp_path / secret).write_text("x")
    (tmp_path / "prometheus.yml").write_text(config.replace("/run/secrets/", f"{tmp_path}/"))
    shutil.copy(ROOT / "ops" / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    done = subprocess.run(
        ["promtool", "check", "config", "prometheus.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_secrets_come_from_the_environment_never_from_the_file():
    text = (ROOT / "compose.yaml").read_text()
    for secret in ("SECRET_KEY", "POSTGRES_PASSWORD", "RABBITMQ_PASSWORD", "FLOWER_PASSWORD", "GRAFANA_PASSWORD"):
        assert f"${{{secret}:?" in text, secret


def test_the_procfiles_worker_roles_are_the_topologys_and_serve_every_queue():
    assert set(ROLES) == {"cheap", "io", "claude", "maintenance"}
    assert frozenset().union(*ROLES.values()) == declared_queues()


def test_every_worker_role_runs_the_procfiles_command():
    for role in ROLES:
        assert SERVICES[role]["command"] == shlex.split(procfile()[role]), role


def test_prometheus_scrapes_every_worker_role_by_its_service_name():
    config = yaml.safe_load((ROOT / "deploy" / "compose" / "prometheus.yml").read_text())
    (workers,) = [job for job in config["scrape_configs"] if job["job_name"] == "pipeline-workers"]
    assert set(workers["dns_sd_configs"][0]["names"]) == set(ROLES)
