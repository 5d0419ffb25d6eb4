"""The compose stack, run for real with podman (marker `compose`; `make compose-test`; CI runs it).

Builds the images (`make image`: Debian's packages, the wheelhouse, no registry), brings compose.yaml
up (`deploy/compose/up`) under a project name of its own on free loopback ports, with a callback
endpoint beside it (tests/deploy/compose/test.yaml), then: tickets over plain HTTP reach a terminal
state and their callbacks arrive signed; /readyz answers and Prometheus scrapes every target; the
KEDA query reads the work really queued; a worker killed mid-load loses and duplicates nothing;
`down` then up on the same volumes keeps the data. Each phase's counts go to the table printed at
the end (and to var/compose-test.json). The stack goes, volumes and all, even when a check fails,
and what runs killed before their teardown left is swept first. Where podman cannot run this skips
saying why, except in CI (CI=true), where it fails: .ci/run says SKIPPED itself where podman cannot
run a container, and a stack test that silently did not run would pass for one that did.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
import yaml
from standardwebhooks import Webhook

from tests.deploy.topology import ROOT

pytestmark = pytest.mark.compose

# COMPOSE_TEST_PROJECT: run against a stack already up (its ports and secrets in the environment,
# as deploy/compose/up had them) instead of building and starting one; it is left running.
REUSE = os.environ.get("COMPOSE_TEST_PROJECT", "")
PROJECT = REUSE or f"ap-test-{os.getpid()}"
FILES = "compose.yaml tests/deploy/compose/test.yaml"
TERMINAL = {"resolved", "awaiting_review", "dead_lettered"}
SAMPLES = [
    "My card still has not arrived after two weeks, where is it?",
    "I want to know the exchange rate you use for foreign payments",
    "How do I top up my account with a bank transfer?",
    "My card payment was declined at the shop this morning",
    "Please close my account",
    "Why was I charged a fee for a cash withdrawal?",
]
ROWS: list[dict[str, Any]] = []
TIMES: dict[str, float] = {}
# The venv's podman-compose (the dev lock), first on PATH for deploy/compose/up as well.
BIN = os.path.dirname(sys.executable)
PODMAN_COMPOSE = (
    os.path.join(BIN, "podman-compose") if os.path.exists(os.path.join(BIN, "podman-compose")) else "podman-compose"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _podman_works() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed (.ci/run installs it)"
    if os.geteuid() != 0:
        return "the compose test runs podman as root"
    done = subprocess.run(["podman", "info"], capture_output=True, text=True)
    return None if done.returncode == 0 else f"podman cannot run here: {done.stderr.strip()[-300:]}"


def sh(*args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 900) -> str:
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done.stdout


class Stack:
    def __init__(self) -> None:
        names = ("WEB_PORT", "FLOWER_PORT", "PROMETHEUS_PORT", "RECEIVER_PORT")
        self.ports = {name: int(os.environ[name]) if REUSE else _free_port() for name in names}
        secret = uuid.uuid4().hex
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            **{k: str(v) for k, v in self.ports.items()},
            "COMPOSE_PROJECT_NAME": PROJECT,
            "COMPOSE_FILES": FILES,
            "SECRET_KEY": f"compose-test-{secret}-{secret}",
            "POSTGRES_PASSWORD": f"pg-{secret[:16]}",
            "RABBITMQ_PASSWORD": f"mq-{secret[:16]}",
            "FLOWER_PASSWORD": f"flower-{secret[:16]}",
            "METRICS_TOKEN": f"metrics-{secret}",
            "GRAFANA_PASSWORD": "unused-grafana-is-not-started",
            "CALLBACK_ALLOWED_HOSTS": "hooks.compose.test:8080",
        }
        if REUSE:
            self.env = {**self.env, **os.environ}
        self.web = f"http://127.0.0.1:{self.ports['WEB_PORT']}"
        self.prometheus = f"http://127.0.0.1:{self.ports['PROMETHEUS_PORT']}"
        self.receiver = f"http://127.0.0.1:{self.ports['RECEIVER_PORT']}"

    def compose(self, *args: str, check: bool = True) -> str:
        files = [arg for f in FILES.split() for arg in ("-f", f)]
        return sh(PODMAN_COMPOSE, "-p", PROJECT, *files, *args, env=self.env, check=check)

    def up(self) -> None:
        sh("deploy/compose/up", env=self.env)

    def teardown(self) -> None:
        """Everything of this project goes, whatever state a failed check left it in: `down -v`,
        then any container, pod, volume or network still labelled with the project's name."""
        self.compose("down", "-v", "-t", "5", check=False)
        sweep(PROJECT)

    def container(self, service: str) -> str:
        labels = [f"label=com.docker.compose.project={PROJECT}", f"label=com.docker.compose.service={service}"]
        return sh("podman", "ps", "-a", "-q", "--filter", labels[0], "--filter", labels[1]).split()[0]

    def exec(self, service: str, *args: str) -> str:
        return sh("podman", "exec", self.container(service), *args)

    def sql(self, query: str) -> str:
        # The server's own socket and port: Debian's psql wrapper would otherwise pick a cluster config.
        args = ("psql", "-h", "/var/run/postgresql", "-p", "5432", "-U", "agents", "-d", "agents", "-At", "-c", query)
        return self.exec("postgres", *args).strip()


LABEL = "com.docker.compose.project"


def sweep(project: str) -> None:
    """Removes every container, pod, volume and network of `project` that podman still holds."""
    for ls, rm, flt in (
        (["ps", "-a", "-q"], ["rm", "-f", "-t", "0"], f"label={LABEL}={project}"),
        (["pod", "ps", "-q"], ["pod", "rm", "-f"], f"name=^pod_{project}$"),
        (["volume", "ls", "-q"], ["volume", "rm", "-f"], f"label={LABEL}={project}"),
        (["network", "ls", "-q"], ["network", "rm", "-f"], f"label={LABEL}={project}"),
    ):
        ids = sh("podman", *ls, "--filter", flt, check=False).split()
        if ids:
            sh("podman", *rm, *ids, check=False)


def leftovers(project: str) -> list[str]:
    """What podman still holds of `project`: containers, pods, volumes and networks."""
    out = []
    for ls, flt in (
        (["ps", "-a"], f"label={LABEL}={project}"),
        (["pod", "ps"], f"name=^pod_{project}$"),
        (["volume", "ls"], f"label={LABEL}={project}"),
        (["network", "ls"], f"label={LABEL}={project}"),
    ):
        out += sh("podman", *ls, "-q", "--filter", flt, check=False).split()
    return out


def sweep_dead_runs() -> list[str]:
    """Sweeps the projects of earlier runs of this test whose process is gone (killed before its
    teardown, e.g. by a CI timeout); a run still alive is left alone."""
    projects = set()
    for ls in (["ps", "-a"], ["volume", "ls"], ["network", "ls"]):
        for item in json.loads(sh("podman", *ls, "--format", "json", check=False) or "[]"):
            projects.add((item.get("Labels") or item.get("labels") or {}).get(LABEL, ""))
    dead = [p for p in projects if re.fullmatch(r"ap-test-(\d+)", p) and not os.path.exists(f"/proc/{p[8:]}")]
    for project in dead:
        sweep(project)
    return dead


@pytest.fixture(scope="module")
def stack() -> Any:
    reason = _podman_works()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"the compose test must run in CI: {reason}")
        pytest.skip(reason)
    swept = sweep_dead_runs()
    if swept:
        print(f"\nswept what earlier runs left: {swept}")
    t0 = time.monotonic()
    if not REUSE:
        sh("deploy/images/build", timeout=1800)  # what `make image` runs
    TIMES["build_s"] = time.monotonic() - t0
    s = Stack()
    try:
        if not REUSE:
            s.up()
        TIMES["up_s"] = time.monotonic() - t0 - TIMES["build_s"]
        yield s
    finally:
        t1 = time.monotonic()
        if not REUSE and os.environ.get("COMPOSE_TEST_KEEP") != "1":
            s.teardown()
            left = leftovers(PROJECT)
            if left:
                print(f"\n{PROJECT}: left behind after teardown: {left}")
        TIMES["checks_s"] = t1 - t0 - TIMES["build_s"] - TIMES.get("up_s", 0)
        TIMES["down_s"] = time.monotonic() - t1
        out = ROOT / "var" / "compose-test.json"
        out.parent.mkdir(exist_ok=True)
        times = {k: round(v, 1) for k, v in TIMES.items()}
        out.write_text(json.dumps({"project": PROJECT, "seconds": times, "rows": ROWS}, indent=2))
        print("\n" + table(ROWS))
        print(f"seconds: {times} (also in var/compose-test.json)")


def table(rows: list[dict[str, Any]]) -> str:
    head = "| phase | tickets sent | terminal | lost | duplicated | callbacks delivered (signed, verified) |"
    lines = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['phase']} | {r['sent']} | {r['terminal']} | {r['lost']} | {r['duplicated']} | {r['callbacks']} |"
        )
    return "\n".join(lines)


@pytest.fixture(scope="module")
def client(stack: Stack) -> dict[str, str]:
    out = stack.exec(
        "web",
        "python",
        "manage.py",
        "create_client",
        "compose-test",
        "--callback-url",
        "http://hooks.compose.test:8080/hook",
    )
    secret = re.search(r"whsec_\S+", out).group(0)
    return {"key": out.strip().splitlines()[-1].strip(), "secret": secret}


def submit(stack: Stack, client: dict[str, str], n: int, tag: str, pause: float = 0.0) -> list[str]:
    ids = []
    with httpx.Client(base_url=stack.web, headers={"Authorization": f"Bearer {client['key']}"}, timeout=30) as http:
        for i in range(n):
            body = {"body": f"{SAMPLES[i % len(SAMPLES)]} ({tag} {i})", "customer_ref": f"{tag}-{i}"}
            for _attempt in range(20):
                r = http.post("/api/v1/tickets/", json=body, headers={"Idempotency-Key": f"{tag}-{i}"})
                if r.status_code in (200, 202):
                    break
                assert r.status_code == 503, r.text  # backpressure or a dependency blip: retry
                time.sleep(float(r.headers.get("Retry-After", "1")))
            else:
                raise AssertionError(f"ticket {tag}-{i} never accepted: {r.status_code} {r.text}")
            ids.append(r.json()["id"])
            if pause:
                time.sleep(pause)
    return ids


def statuses(stack: Stack, ids: list[str]) -> dict[str, str]:
    rows = stack.sql(f"SELECT id, status FROM tickets_ticket WHERE id IN ({','.join(repr(i) for i in ids)})")
    return dict(line.split("|") for line in rows.splitlines() if line)


def settle(stack: Stack, ids: list[str], timeout: float = 240) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        found = statuses(stack, ids)
        if all(found.get(i) in TERMINAL for i in ids) or time.monotonic() > deadline:
            return found
        time.sleep(2)


def callbacks(stack: Stack, client: dict[str, str], ids: list[str], timeout: float = 60) -> Counter[str]:
    """Verified callbacks per ticket, once every settled ticket has had one (or the timeout)."""
    webhook, wanted = Webhook(client["secret"]), set(ids)
    deadline = time.monotonic() + timeout
    while True:
        got: Counter[str] = Counter()
        for post in httpx.get(f"{stack.receiver}/received", timeout=10).json():
            payload = webhook.verify(post["body"], post["headers"])  # raises unless signed with the secret
            ticket = payload["ticket"]["id"]
            if ticket in wanted:
                got[ticket] += 1
        if set(got) >= wanted or time.monotonic() > deadline:
            return got


def audit(stack: Stack, client: dict[str, str], phase: str, ids: list[str]) -> dict[str, Any]:
    found = settle(stack, ids)
    terminal = [i for i in ids if found.get(i) in TERMINAL]
    got = callbacks(stack, client, terminal)
    twice = stack.sql(
        "SELECT count(*) FROM (SELECT ticket_id, stage FROM agents_trace WHERE status = 'ok' AND ticket_id IN "
        f"({','.join(repr(i) for i in ids)}) GROUP BY ticket_id, stage HAVING count(*) > 1) AS d"
    )
    row = {
        "phase": phase,
        "sent": len(ids),
        "terminal": len(terminal),
        "lost": len(ids) - len(terminal),
        "duplicated": int(twice) + sum(1 for n in got.values() if n > 1),
        "callbacks": sum(got.values()),
        "statuses": dict(Counter(found.values())),
    }
    ROWS.append(row)
    return row


def test_tickets_over_plain_http_reach_a_terminal_state_with_signed_callbacks(stack, client):
    r = httpx.get(f"{stack.web}/api/v1/tickets/", headers={"Authorization": f"Bearer {client['key']}"})
    assert r.status_code == 200, r.text  # plain HTTP answers: no redirect to https
    ids = submit(stack, client, 60, "normal")
    row = audit(stack, client, "normal load", ids)
    assert row["lost"] == 0 and row["duplicated"] == 0 and row["callbacks"] == row["sent"], row


def test_readyz_answers_and_prometheus_scrapes_every_target(stack):
    assert httpx.get(f"{stack.web}/readyz").status_code == 200
    flower = f"http://127.0.0.1:{stack.ports['FLOWER_PORT']}/"
    assert httpx.get(flower).status_code == 401  # the password, read from the environment, is enforced
    deadline, targets = time.monotonic() + 90, []
    while time.monotonic() < deadline:
        targets = httpx.get(f"{stack.prometheus}/api/v1/targets").json()["data"]["activeTargets"]
        jobs = {t["labels"]["job"] for t in targets}
        if {"pipeline-api", "pipeline-workers", "flower"} <= jobs and all(t["health"] == "up" for t in targets):
            break
        time.sleep(3)
    roles = {t["labels"].get("role") for t in targets if t["labels"]["job"] == "pipeline-workers"}
    assert all(t["health"] == "up" for t in targets), [(t["scrapeUrl"], t["lastError"]) for t in targets]
    assert roles == {"cheap", "io", "claude", "maintenance"}, roles


def keda_query(role: str) -> str:
    values = yaml.safe_load((ROOT / "deploy/helm/agent-pipeline/values.yaml").read_text())
    from tests.deploy.test_helm import render

    for doc in render():
        if doc.get("kind") == "ScaledObject" and doc["metadata"]["name"].endswith(f"-{role}"):
            return doc["spec"]["triggers"][0]["metadata"]["query"]
    raise AssertionError(f"no ScaledObject for {role} in {list(values)}")


def prom(stack: Stack, query: str) -> list[dict[str, Any]]:
    return httpx.get(f"{stack.prometheus}/api/v1/query", params={"query": query}).json()["data"]["result"]


def test_the_keda_query_reads_the_work_really_queued(stack, client):
    query = keda_query("cheap")
    stack.compose("stop", "-t", "100", "cheap")  # nothing takes the cheap stages' work: it waits
    try:
        ids = submit(stack, client, 40, "queued")
        deadline, value = time.monotonic() + 90, None
        while time.monotonic() < deadline:
            result = prom(stack, query)
            value = float(result[0]["value"][1]) if result else None
            if value == len(ids):
                break
            time.sleep(3)
        waiting = stack.exec("rabbitmq", "rabbitmqctl", "-q", "list_queues", "-p", "agents", "name", "messages")
        in_broker = sum(
            int(n)
            for name, n in (line.split() for line in waiting.splitlines() if line.strip())
            if name.split(".")[0] in {"parse", "classify", "decide", "escalate"}
        )
        ROWS.append(
            {
                "phase": "KEDA query, cheap stopped",
                "sent": len(ids),
                "terminal": "-",
                "lost": "-",
                "duplicated": "-",
                "callbacks": f"query {value}, broker {in_broker}",
            }
        )
        assert value == len(ids) == in_broker, (value, in_broker)
    finally:
        stack.compose("start", "cheap")
    audit(stack, client, "queued, then drained", ids)
    assert prom(stack, query)  # after the drain: a real 0 read from the metric, not nothing


def test_a_worker_killed_mid_load_loses_nothing_and_does_nothing_twice(stack, client):
    import threading

    ids: list[str] = []
    load = threading.Thread(target=lambda: ids.extend(submit(stack, client, 150, "kill", pause=0.02)))
    load.start()
    time.sleep(1.5)
    sh("podman", "kill", "-s", "KILL", stack.container("cheap"))
    time.sleep(1)
    sh("podman", "kill", "-s", "KILL", stack.container("io"))
    load.join()
    for service in ("cheap", "io"):  # restart: unless-stopped brings them back; make sure of it
        if sh("podman", "inspect", "-f", "{{.State.Running}}", stack.container(service)).strip() != "true":
            stack.compose("start", service)
    row = audit(stack, client, "cheap and io workers killed (SIGKILL) mid-load", ids)
    assert row["lost"] == 0 and row["duplicated"] == 0 and row["callbacks"] == row["sent"], row


def test_down_then_up_on_the_same_volumes_keeps_the_data(stack, client):
    before = stack.sql(
        "SELECT count(*), count(*) FILTER (WHERE status IN ('resolved','awaiting_review','dead_lettered')) FROM tickets_ticket"
    )
    stack.compose("down", "-t", "100")
    stack.up()
    after = stack.sql(
        "SELECT count(*), count(*) FILTER (WHERE status IN ('resolved','awaiting_review','dead_lettered')) FROM tickets_ticket"
    )
    assert after == before
    ids = submit(stack, client, 20, "after-up")  # the same key still works: the client survived too
    row = audit(stack, client, f"down, then up on the same volumes ({before.split('|')[0]} tickets kept)", ids)
    assert row["lost"] == 0 and row["duplicated"] == 0, row


# The teardown itself, on podman without a stack (seconds).
def test_the_teardown_leaves_nothing_of_the_project(tmp_path):
    """What a failed run can leave (a container, its pod, a volume, a network) is all swept, and
    only the project's own: another project's volume stays."""
    reason = _podman_works()
    if reason:
        pytest.skip(reason)
    root = tmp_path / "rootfs"
    libs = re.findall(r"(/\S+) \(0x", sh("ldd", "/bin/true"))
    for path in ["/bin/true", *libs]:
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / path.lstrip("/"))
    project, other = f"ap-sweep-{uuid.uuid4().hex[:8]}", f"ap-other-{uuid.uuid4().hex[:8]}"
    label = f"{LABEL}={project}"
    try:
        sh("podman", "pod", "create", "--infra=false", "--name", f"pod_{project}")
        sh("podman", "network", "create", "--label", label, f"{project}_default")
        sh("podman", "volume", "create", "--label", label, f"{project}_postgres")
        sh("podman", "volume", "create", "--label", f"{LABEL}={other}", f"{other}_postgres")
        sh("podman", "create", "--label", label, "--network", "none", "--rootfs", str(root), "/bin/true")
        assert len(leftovers(project)) == 4
        sweep(project)
        assert leftovers(project) == []
        assert len(leftovers(other)) == 1
    finally:
        sweep(project)
        sweep(other)


def test_a_dead_runs_project_is_swept_and_a_live_ones_is_not():
    reason = _podman_works()
    if reason:
        pytest.skip(reason)
    dead_pid = int(sh("sh", "-c", "echo $$").strip())  # a shell that has exited: its pid is gone
    dead, alive = f"ap-test-{dead_pid}", f"ap-test-{os.getppid()}"  # not this run's own
    try:
        for project in (dead, alive):
            sh("podman", "volume", "create", "--label", f"{LABEL}={project}", f"{project}_redis")
        assert dead in sweep_dead_runs()
        assert leftovers(dead) == [] and len(leftovers(alive)) == 1
    finally:
        sweep(dead)
        sweep(alive)


# What a second `make image` reuses (docs/deploy.md): the bases by their recipe's hash, the
# wheelhouse by the locks' hash. Downloads are faked on PATH; podman's import and labels are real.


def _fake(bin_dir: Any, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text("#!/bin/sh\n" + script)
    (bin_dir / name).chmod(0o755)


def test_a_debian_base_is_reused_while_its_recipe_is_unchanged_and_rebuilt_when_not(tmp_path):
    reason = _podman_works()
    if reason:
        pytest.skip(reason)
    calls = tmp_path / "mmdebstrap-calls"
    # mmdebstrap's stand-in: a root filesystem of one file, written where the script asks.
    _fake(
        tmp_path / "bin",
        "mmdebstrap",
        f'echo "$*" >> {calls}\nfor a; do case "$a" in *.tar) out="$a";; esac; done\n'
        'mkdir -p "$out.d/etc" && echo fake > "$out.d/etc/fake" && tar -C "$out.d" -cf "$out" .\n',
    )
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    script = tmp_path / "debian-base"
    shutil.copy(ROOT / "deploy/images/debian-base", script)
    name = f"localhost/ap-base-test-{uuid.uuid4().hex[:8]}"

    ids = set()

    def build(*packages: str) -> str:
        out = sh(str(script), name, *packages, env=env)
        ids.add(sh("podman", "image", "inspect", "--format", "{{.Id}}", name).strip())
        return out

    def built() -> int:
        return len(calls.read_text().splitlines()) if calls.exists() else 0

    try:
        assert "built" in build("python3", "tzdata") and built() == 1
        assert "reused" in build("python3", "tzdata") and built() == 1
        assert "built" in build("python3", "tzdata", "curl") and built() == 2  # another list
        assert "reused" in build("python3", "tzdata", "curl") and built() == 2
        script.write_text(script.read_text() + "# a changed recipe\n")
        assert "built" in build("python3", "tzdata", "curl") and built() == 3
        env["DEBIAN_SUITE"] = "trixie"
        assert "built" in build("python3", "tzdata", "curl") and built() == 4
    finally:
        sh("podman", "image", "rm", "-f", *ids, check=False)  # each build's, the untagged ones too


def test_the_wheelhouse_is_reused_while_the_locks_are_unchanged_and_filled_again_when_not(tmp_path):
    root = tmp_path / "repo"
    (root / "deploy/images").mkdir(parents=True)
    (root / "requirements").mkdir()
    shutil.copy(ROOT / "deploy/images/wheelhouse", root / "deploy/images/wheelhouse")
    (root / "requirements/runtime.txt").write_text("django==5.2 --hash=sha256:aa\n")
    (root / "requirements-encoder.txt").write_text("encoder==0.1 --hash=sha256:bb\n")
    calls = tmp_path / "pip-calls"
    # pip's stand-in: one wheel into the -d directory.
    _fake(
        tmp_path / "bin",
        "python",
        f'echo "$*" >> {calls}\nwhile [ "$1" != -d ]; do shift; done\ntouch "$2/pkg-1.0-py3-none-any.whl"\n',
    )
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}

    def fill() -> str:
        return sh(str(root / "deploy/images/wheelhouse"), env=env)

    def downloads() -> int:
        return len(calls.read_text().splitlines()) if calls.exists() else 0

    assert "filled" in fill() and downloads() == 1
    assert "reused" in fill() and downloads() == 1
    assert (root / "var/wheelhouse/pkg-1.0-py3-none-any.whl").exists()
    (root / "requirements-encoder.txt").write_text("encoder==0.2 --hash=sha256:cc\n")
    assert "filled" in fill() and downloads() == 2
    assert "reused" in fill() and downloads() == 2
