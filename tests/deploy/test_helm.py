"""The Helm chart, rendered offline by Helm's own engine (helm-python-sdk binds Helm's Go SDK; no
cluster, no helm binary) and every core manifest validated against Kubernetes' schemas in strict
mode (kubernetes-validate). KEDA's ScaledObject is checked by the rules below: its target, its
trigger's PromQL (promtool) and that it reads only metrics the product exports."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.topology import (
    ROLES,
    ROOT,
    WORKER_ENTRY,
    declared_queues,
    hand_listed_queues,
    procfile,
    task_time_limit,
    worker_queues,
)

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed (the dev lock has it)")
CHART = ROOT / "deploy" / "helm" / "agent-pipeline"
K8S_VERSION = "1.30.0"


# What an install must give (the chart refuses to render without it): the secrets, where the
# archives go, the Postgres behind PgBouncer; and, offline, that KEDA's CRDs may be assumed.
REQUIRED: dict[str, Any] = {
    "secrets": {
        "SECRET_KEY": "k" * 64,
        "DATABASE_URL": "postgres://agents:pw@ap-agent-pipeline-pgbouncer:6432/agents",
        "REDIS_URL": "redis://redis:6379/0",
        "FLOWER_BASIC_AUTH": "admin:a-long-enough-password",
        "PGBOUNCER_USERLIST": '"agents" "pw"',
    },
    "archive": {"s3": {"bucket": "traces-archive"}},
    "pgbouncer": {"upstream": {"host": "postgres.db.svc"}},
    "keda": {"skipCapabilityCheck": True},
}


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def render(values: dict[str, Any] | None = None, *, base: dict[str, Any] = REQUIRED) -> list[dict[str, Any]]:
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(merged(base, values or {}), name="ap", namespace="prod")
    return [doc for text in out.values() for doc in yaml.safe_load_all(text) if doc]


def render_error(values: dict[str, Any], *, base: dict[str, Any] = REQUIRED) -> str:
    with pytest.raises(helm.HelmRenderError) as failed:
        render(values, base=base)
    return str(failed.value)


DOCS = render()


def kind(name: str, docs: list[dict[str, Any]] = DOCS) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == name]


def containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def workers() -> dict[str, dict[str, Any]]:
    """Worker Deployments by role (their name's last part)."""
    out = {}
    for doc in kind("Deployment"):
        if worker_queues(doc["spec"]["template"]["spec"]["containers"][0]["command"]):
            out[doc["metadata"]["name"].rsplit("-", 1)[1]] = doc
    return out


def test_the_chart_lints_without_errors():
    assert helm.lint(str(CHART))["errors"] == []


@pytest.mark.parametrize("values", [{}, {"keda": {"enabled": False}, "existingSecret": "pipeline-prod"}])
def test_every_rendered_manifest_is_valid_kubernetes(values):
    for doc in render(values):
        if doc["apiVersion"].startswith(("keda.sh/", "monitoring.coreos.com/")):
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_an_invalid_manifest_is_caught():
    deployment = {**kind("Deployment")[0], "spec": {**kind("Deployment")[0]["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_a_deployment_per_worker_role_consumes_the_topologys_queues_and_together_every_queue():
    consumed = {
        role: worker_queues(d["spec"]["template"]["spec"]["containers"][0]["command"]) for role, d in workers().items()
    }
    assert consumed == ROLES
    assert frozenset().union(*consumed.values()) == declared_queues()
    product = [d for d in kind("Deployment") + kind("Job") if not d["metadata"]["name"].endswith("-pgbouncer")]
    assert len({c["image"] for d in product for c in containers(d)}) == 1


def test_every_worker_role_runs_the_procfiles_command():
    for role, doc in workers().items():
        assert doc["spec"]["template"]["spec"]["containers"][0]["command"] == shlex.split(procfile()[role]), role


def test_workers_get_longer_than_the_longest_task_time_limit_to_shut_down():
    for role, doc in workers().items():
        assert doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > task_time_limit(), role


def test_exactly_one_beat_never_two_even_during_a_rollout():
    beats = [d for d in kind("Deployment") if "beat" in d["spec"]["template"]["spec"]["containers"][0]["command"]]
    assert len(beats) == 1
    assert beats[0]["spec"]["replicas"] == 1 and beats[0]["spec"]["strategy"]["type"] == "Recreate"
    assert beats[0]["metadata"]["name"] not in {s["spec"]["scaleTargetRef"]["name"] for s in kind("ScaledObject")}


def test_web_and_workers_have_readiness_and_liveness_probes():
    (web,) = [d for d in kind("Deployment") if d["metadata"]["name"].endswith("-web")]
    main = web["spec"]["template"]["spec"]["containers"][0]
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz?skip=broker"  # a broker blip keeps the pods in
    for role, doc in workers().items():
        main = doc["spec"]["template"]["spec"]["containers"][0]
        for probe in ("livenessProbe", "readinessProbe"):
            assert main[probe]["exec"]["command"][0] == "deploy/worker-alive", (role, probe)


def test_every_role_waits_for_the_init_jobs_migrations_and_reads_settings_from_the_configmap_and_secret():
    (job,) = kind("Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["deploy/init"]
    for doc in kind("Deployment"):
        if doc["metadata"]["name"].endswith("-pgbouncer"):
            continue  # PgBouncer reads its own files, not the product's settings
        for container in containers(doc):
            refs = {next(iter(ref)): next(iter(ref.values()))["name"] for ref in container["envFrom"]}
            assert refs == {"configMapRef": "ap-agent-pipeline-config", "secretRef": "ap-agent-pipeline-secrets"}
        if not doc["metadata"]["name"].endswith("-flower"):
            init = doc["spec"]["template"]["spec"]["initContainers"][0]
            assert "migrate --check" in init["command"][-1], doc["metadata"]["name"]


def test_an_existing_secret_replaces_the_charts_own():
    docs = render({"existingSecret": "pipeline-prod", "pgbouncer": {"enabled": False}})
    assert kind("Secret", docs) == []
    for doc in kind("Deployment", docs):
        assert {"secretRef": {"name": "pipeline-prod"}} in doc["spec"]["template"]["spec"]["containers"][0]["envFrom"]


def test_a_pod_disruption_budget_covers_web_and_every_worker_role():
    budgets = {tuple(sorted(p["spec"]["selector"]["matchLabels"].items())) for p in kind("PodDisruptionBudget")}
    for doc in [*workers().values(), *[d for d in kind("Deployment") if d["metadata"]["name"].endswith("-web")]]:
        assert tuple(sorted(doc["spec"]["selector"]["matchLabels"].items())) in budgets, doc["metadata"]["name"]


def test_no_worker_lists_queues_by_hand_and_the_charts_queue_file_is_the_specs():
    assert not [
        d["metadata"]["name"] for d in kind("Deployment") for c in containers(d) if hand_listed_queues(c["command"])
    ]
    printed = subprocess.run(
        [sys.executable, "-m", WORKER_ENTRY, "--roles"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert (CHART / "queues.yaml").read_text() == printed, "run: python -m agents.pipeline.worker --roles > " + str(
        (CHART / "queues.yaml").relative_to(ROOT)
    )
    assert {role: frozenset(q) for role, q in yaml.safe_load(printed).items()} == ROLES


def measured_rss_mb() -> dict[str, float]:
    """Peak RSS per worker from the benchmark's headline table (docs/performance.md)."""
    line = next(x for x in (ROOT / "docs" / "performance.md").read_text().splitlines() if "worker RSS, peak" in x)
    found = {"model": float(re.search(r"(?:parse|cpu) (\d+(?:\.\d+)?) MB", line).group(1))}
    found["llm"] = float(re.search(r"llm (\d+(?:\.\d+)?) MB", line).group(1))
    found["other"] = max(float(x) for x in re.search(r"others (\d+)–(\d+) MB", line).groups())
    return found


def mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(Mi|Gi|M|G)", quantity).groups()
    return float(number) * {"Mi": 1.048576, "Gi": 1073.741824, "M": 1, "G": 1000}[unit]


def test_worker_memory_requests_cover_the_benchmarks_measured_peak_per_process():
    rss = measured_rss_mb()
    for role, doc in workers().items():
        main = doc["spec"]["template"]["spec"]["containers"][0]
        command = main["command"]
        processes = int(command[command.index("--concurrency") + 1]) if "prefork" in command else 1
        per_process = (
            rss["model"] if role in ("cheap", "maintenance") else rss["llm"] if role == "claude" else rss["other"]
        )
        assert mebibytes(main["resources"]["requests"]["memory"]) >= processes * per_process, role
        assert mebibytes(main["resources"]["limits"]["memory"]) > mebibytes(main["resources"]["requests"]["memory"])


def test_keda_scales_each_scaled_role_on_its_queues_waiting_plus_held():
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in kind("ScaledObject")}
    for role, doc in workers().items():
        obj = scaled.get(doc["metadata"]["name"])
        if role == "maintenance":
            assert obj is None and doc["spec"]["replicas"] == 1  # one at a time, by design
            continue
        assert obj is not None, role
        assert "replicas" not in doc["spec"]  # KEDA owns the count
        (trigger,) = obj["spec"]["triggers"]
        assert trigger["type"] == "prometheus"
        assert all(isinstance(v, str) for v in trigger["metadata"].values())  # KEDA's metadata is a string map
        query = trigger["metadata"]["query"]
        for metric in ("pipeline_queue_depth", "pipeline_queue_in_flight"):
            (selector,) = re.findall(metric + r'\{queue=~"([^"]+)"\}', query)
            assert frozenset(selector.split("|")) == ROLES[role], (role, metric)
        assert 1 <= obj["spec"]["minReplicaCount"] < obj["spec"]["maxReplicaCount"]


def test_the_keda_queries_read_only_exported_metrics(db):
    from tests.observability.metric_names import exported_names, referenced_names

    for obj in kind("ScaledObject"):
        assert referenced_names(obj["spec"]["triggers"][0]["metadata"]["query"]) <= exported_names()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (CI installs it)")
def test_the_keda_queries_are_valid_promql(tmp_path: Path):
    rules = [
        {"record": f"keda:{i}", "expr": s["spec"]["triggers"][0]["metadata"]["query"]}
        for i, s in enumerate(kind("ScaledObject"))
    ]
    (tmp_path / "keda.yml").write_text(yaml.safe_dump({"groups": [{"name": "keda", "rules": rules}]}))
    done = subprocess.run(["promtool", "check", "rules", "keda.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_without_keda_each_worker_role_runs_its_minimum_replicas():
    docs = render({"keda": {"enabled": False}})
    assert kind("ScaledObject", docs) == []
    for doc in kind("Deployment", docs):
        assert doc["spec"]["replicas"] >= 1, doc["metadata"]["name"]


# --- Day-one fixes (issue 21): each fails at render, or renders what a cluster needs -------------


def deployment(name: str, docs: list[dict[str, Any]] = DOCS) -> dict[str, Any]:
    (doc,) = [d for d in kind("Deployment", docs) if d["metadata"]["name"] == f"ap-agent-pipeline-{name}"]
    return doc


def annotations(doc: dict[str, Any]) -> dict[str, str]:
    return doc["spec"]["template"]["metadata"].get("annotations", {})


@pytest.mark.parametrize(
    "missing", ["SECRET_KEY", "DATABASE_URL", "REDIS_URL", "FLOWER_BASIC_AUTH", "PGBOUNCER_USERLIST"]
)
def test_a_missing_secret_fails_at_render_naming_it(missing):
    assert f"secrets.{missing}" in render_error({"secrets": {missing: ""}})


def test_a_short_secret_key_fails_at_render_and_an_existing_secret_needs_none_of_them():
    assert "50 characters" in render_error({"secrets": {"SECRET_KEY": "short"}})
    bare = {k: v for k, v in REQUIRED.items() if k != "secrets"}
    assert kind("Deployment", render({"existingSecret": "pipeline-prod"}, base=bare))


def test_a_changed_secret_rolls_every_pod_and_an_unchanged_one_none():
    before = {d["metadata"]["name"]: annotations(d)["checksum/secret"] for d in kind("Deployment")}
    after_docs = render({"secrets": {"REDIS_URL": "redis://redis-2:6379/0"}})
    after = {d["metadata"]["name"]: annotations(d)["checksum/secret"] for d in kind("Deployment", after_docs)}
    assert set(before) == set(after) and all(before[n] != after[n] for n in before)
    again = {d["metadata"]["name"]: annotations(d)["checksum/secret"] for d in kind("Deployment", render())}
    assert again == before
    bumped = render({"existingSecret": "pipeline-prod", "existingSecretRevision": "2"})
    first = render({"existingSecret": "pipeline-prod", "existingSecretRevision": "1"})
    assert (
        annotations(deployment("web", bumped))["checksum/secret"]
        != annotations(deployment("web", first))["checksum/secret"]
    )


def test_keda_enabled_without_its_crds_fails_at_render_and_disabled_renders_no_scaled_object():
    message = render_error({"keda": {"skipCapabilityCheck": False}})
    assert "keda.sh/v1alpha1" in message and "keda.enabled=false" in message
    assert kind("ScaledObject", render({"keda": {"enabled": False, "skipCapabilityCheck": False}})) == []


def test_the_keda_query_has_no_zero_to_fall_back_on_when_the_depth_is_unreadable():
    for obj in kind("ScaledObject"):
        metadata = obj["spec"]["triggers"][0]["metadata"]
        assert metadata["ignoreNullValues"] == "false"  # an empty answer is an error: KEDA falls back
        depth = metadata["query"].split("+")[0]
        assert "pipeline_queue_depth" in depth and "vector(0)" not in depth
        assert obj["spec"]["fallback"]["replicas"] >= 2


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (CI installs it)")
def test_the_keda_query_reads_nothing_without_the_depth_metric_and_the_real_sum_with_it(tmp_path: Path):
    query = next(o for o in kind("ScaledObject") if o["metadata"]["name"].endswith("-io"))
    expr = query["spec"]["triggers"][0]["metadata"]["query"]
    tests = {
        "rule_files": [],
        "evaluation_interval": "15s",
        "tests": [
            {  # the scrape of the web pods fails: no depth series at all -> no answer (KEDA falls back)
                "interval": "15s",
                "input_series": [{"series": 'pipeline_queue_in_flight{queue="execute",pod="w1"}', "values": "3x4"}],
                "promql_expr_test": [{"expr": expr, "eval_time": "30s", "exp_samples": []}],
            },
            {  # two web pods report the same broker depth (max by queue), workers hold 3
                "interval": "15s",
                "input_series": [
                    {"series": 'pipeline_queue_depth{queue="execute",pod="a"}', "values": "5x4"},
                    {"series": 'pipeline_queue_depth{queue="execute",pod="b"}', "values": "5x4"},
                    {"series": 'pipeline_queue_depth{queue="webhooks",pod="a"}', "values": "2x4"},
                    {"series": 'pipeline_queue_in_flight{queue="execute",pod="w1"}', "values": "3x4"},
                ],
                "promql_expr_test": [
                    {"expr": expr, "eval_time": "30s", "exp_samples": [{"labels": "{}", "value": 10}]}
                ],
            },
            {  # an idle system reads a real 0, and no worker alive holds nothing
                "interval": "15s",
                "input_series": [{"series": 'pipeline_queue_depth{queue="execute",pod="a"}', "values": "0x4"}],
                "promql_expr_test": [{"expr": expr, "eval_time": "30s", "exp_samples": [{"labels": "{}", "value": 0}]}],
            },
        ],
    }
    (tmp_path / "keda_test.yml").write_text(yaml.safe_dump(tests))
    done = subprocess.run(["promtool", "test", "rules", "keda_test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_web_metrics_are_on_a_port_prometheus_scrapes_and_no_service_or_ingress_routes():
    web = deployment("web")
    main = web["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert annotations(web)["prometheus.io/port"] == str(ports["metrics"]) == "9100"
    assert "0.0.0.0:9100" in main["command"] and "0.0.0.0:8000" in main["command"]
    (config,) = [c for c in kind("ConfigMap") if c["metadata"]["name"].endswith("-config")]
    assert config["data"]["METRICS_PORT"] == "9100"
    for service in kind("Service"):
        assert all(p.get("targetPort") != "metrics" and p["port"] != 9100 for p in service["spec"]["ports"])
    (ingress,) = kind("Ingress")
    backends = [p["backend"]["service"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
    assert backends == [{"name": "ap-agent-pipeline-web", "port": {"name": "http"}}]


def test_the_ingress_terminates_tls_for_its_host():
    (ingress,) = kind("Ingress")
    (tls,) = ingress["spec"]["tls"]
    assert tls["hosts"] == ["api.example.com"] == [r["host"] for r in ingress["spec"]["rules"]]
    assert tls["secretName"] == "ap-agent-pipeline-tls"
    assert kind("Ingress", render({"ingress": {"enabled": False}})) == []


def test_pgbouncer_pools_transactions_and_the_product_is_told_to_keep_no_session_state():
    (ini,) = [c for c in kind("ConfigMap") if c["metadata"]["name"].endswith("-pgbouncer")]
    text = ini["data"]["pgbouncer.ini"]
    assert "pool_mode = transaction" in text and "host=postgres.db.svc port=5432 dbname=agents" in text
    assert re.search(r"max_db_connections = 40\b", text)
    (config,) = [c for c in kind("ConfigMap") if c["metadata"]["name"].endswith("-config")]
    assert config["data"]["DB_TRANSACTION_POOLING"] == "1"
    (service,) = [s for s in kind("Service") if s["metadata"]["name"].endswith("-pgbouncer")]
    assert service["spec"]["ports"][0]["port"] == 6432
    bouncer = deployment("pgbouncer")["spec"]["template"]["spec"]
    assert bouncer["securityContext"]["runAsNonRoot"] is True
    assert "pgbouncer" not in {
        c["metadata"]["name"] for c in kind("ConfigMap", render({"pgbouncer": {"enabled": False}}))
    }


def test_trace_archives_go_to_a_bucket_a_claim_or_nowhere_only_when_asked():
    message = render_error({}, base={**REQUIRED, "archive": {"s3": {"bucket": ""}}})
    assert "archive.s3.bucket" in message
    (config,) = [c for c in kind("ConfigMap") if c["metadata"]["name"].endswith("-config")]
    assert config["data"]["TRACE_ARCHIVE_STORAGE"] == "agents.retention.S3ArchiveStorage"
    assert config["data"]["TRACE_ARCHIVE_S3_BUCKET"] == "traces-archive"
    claim = render({"archive": {"s3": {"bucket": ""}, "existingClaim": "archive"}})
    maintenance = deployment("maintenance", claim)
    assert maintenance["spec"]["strategy"]["type"] == "Recreate"  # a ReadWriteOnce claim: one pod at a time
    volumes = {v["name"]: v for v in maintenance["spec"]["template"]["spec"]["volumes"]}
    assert volumes["archive"]["persistentVolumeClaim"] == {"claimName": "archive"}
