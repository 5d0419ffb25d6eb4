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


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values or {}, name="ap", namespace="prod")
    return [doc for text in out.values() for doc in yaml.safe_load_all(text) if doc]


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
    assert len({c["image"] for d in kind("Deployment") + kind("Job") for c in containers(d)}) == 1


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
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for role, doc in workers().items():
        main = doc["spec"]["template"]["spec"]["containers"][0]
        for probe in ("livenessProbe", "readinessProbe"):
            assert main[probe]["exec"]["command"][0] == "deploy/worker-alive", (role, probe)


def test_every_role_waits_for_the_init_jobs_migrations_and_reads_settings_from_the_configmap_and_secret():
    (job,) = kind("Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["deploy/init"]
    for doc in kind("Deployment"):
        for container in containers(doc):
            refs = {next(iter(ref)): next(iter(ref.values()))["name"] for ref in container["envFrom"]}
            assert refs == {"configMapRef": "ap-agent-pipeline-config", "secretRef": "ap-agent-pipeline-secrets"}
        if not doc["metadata"]["name"].endswith("-flower"):
            init = doc["spec"]["template"]["spec"]["initContainers"][0]
            assert "migrate --check" in init["command"][-1], doc["metadata"]["name"]


def test_an_existing_secret_replaces_the_charts_own():
    docs = render({"existingSecret": "pipeline-prod"})
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
