"""The system under test: the reliability suite's launcher, configured as production runs.

`tooling.system.System` starts gunicorn, a worker per queue and beat from the Procfile's
own commands on embedded Postgres and Redis of its own. `BenchSystem` keeps all of that and
changes what the fault suite changes for its faults back to production: the Banking77 pack, the
default sweeper period and backoff, INFO logs, Prometheus's multi-process directory (as `make
run`). It adds the bench's probe to every process (`--include tooling.bench.worker_probe`, gunicorn hooks),
lifts the per-client API throttle (one client offers all the load), starts the yardstick's worker
(`bench.yardstick`: a bare Celery no-op worker, none of the product's settings), and can switch the Claude tier
on mid-run (restart classify, start the llm worker) against the simulator.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from tooling.bench.yardstick import QUEUE as YARDSTICK_QUEUE
from tooling.system import BIN, PYTHON, ROOT, WORKERS, SimulatorProcess, System

PACK = ROOT / "agents" / "packs" / "banking77.yaml"
TIERS = {"rules": "agents.intents.rules.RulesTier", "local": "agents.intents.local.LocalModelTier"}
# Production values of what the fault suite shortens (settings.py defaults), and bench-only knobs.
BENCH_ENV = {
    "INTENT_PACK": str(PACK),
    "LOG_LEVEL": "INFO",
    "PIPELINE_STUCK_AFTER_SECONDS": "300",
    "SWEEP_EVERY_SECONDS": "30",
    "PIPELINE_BACKOFF_BASE_SECONDS": "1",
    "PIPELINE_BACKOFF_CAP_SECONDS": "300",
    "WEBHOOK_TIMEOUT_SECONDS": "10",
    "CALLBACK_MAX_ATTEMPTS": "8",
    # One API client carries the whole offered load; the throttle still runs, it just never says no.
    "CLIENT_THROTTLE_RATE": "10000000/min",
    "BENCH_PROBE": "1",
}


class BenchSystem(System):
    """The whole system, as processes, with the bench's probe loaded everywhere."""

    def __init__(self, var_dir: Path, *, tiers: list[str], env: dict[str, str] | None = None) -> None:
        var_dir = Path(var_dir)
        self.prometheus_dir = var_dir / "prometheus"
        merged = {
            **BENCH_ENV,
            "CLASSIFIER_TIERS": ",".join(TIERS[t] for t in tiers),
            "PROMETHEUS_MULTIPROC_DIR": str(self.prometheus_dir),
            **(env or {}),
        }
        super().__init__(var_dir, env=merged)
        self.simulator: SimulatorProcess | None = None

    def command(self, name: str) -> list[str]:
        if name == "yardstick":  # the yardstick's own worker: solo, one queue, Celery's defaults
            return [str(BIN / "celery"), "-A", "tooling.bench.yardstick", "worker", "--pool", "solo",
                    "-Q", YARDSTICK_QUEUE, "-n", "yardstick@%h", "--loglevel", "INFO"]  # fmt: skip
        cmd = super().command(name)
        if name == "web":
            return [cmd[0], "-c", "python:tooling.bench.gunicorn_conf", *cmd[1:]]
        if name in (*WORKERS, "claude"):
            return [*cmd, "--include", "tooling.bench.worker_probe"]
        return cmd

    @property
    def yardstick_broker_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        env["YARDSTICK_BROKER_URL"] = self.yardstick_broker_url
        if self.llm_base_url:  # the Claude tier's limits match the simulator's (bench/claude_settings.py)
            env["DJANGO_SETTINGS_MODULE"] = "tooling.bench.claude_settings"
        return env

    def start(self) -> BenchSystem:
        """As `System.start`, with the production pack and the bench's processes."""
        self.logs.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.prometheus_dir, ignore_errors=True)
        self.prometheus_dir.mkdir(parents=True)
        out = subprocess.run(
            [PYTHON, "-m", "project.embedded", "start"], cwd=ROOT, env=self.env, capture_output=True, text=True
        )
        if out.returncode:
            raise RuntimeError(f"embedded servers did not start:\n{out.stderr}")
        self.redis_port = int((self.var / "redis" / "port").read_text())
        self._manage(
            "shell",
            "-c",
            "from django.core.management import call_command as c; c('migrate', verbosity=0); "
            f"c('load_intents', {str(PACK)!r})",
            timeout=300,
        )
        # Intents allowed a downstream call get one (the recorder), as a deployment configures them.
        self.sql(
            "UPDATE agents_intent SET webhook_url = %s || '/downstream/' || name WHERE allowed_actions ? 'webhook'",
            self.downstream.base_url,
        )
        names = ["web", *WORKERS, "beat", "yardstick"]
        for name in names:
            self.spawn(name)
        for name in names:
            self.wait_ready(name, timeout=180)
        return self

    def manage(self, *args: str, timeout: float = 900) -> str:
        return self._manage(*args, timeout=timeout)

    def claude_on(self, *, rpm: int, latency: str) -> str:
        """Start the simulator; restart the workers with the Claude tier on (classify may run in any
        stage worker's fused hop) and start the llm worker."""
        self.simulator = SimulatorProcess("--rpm", str(rpm), "--latency", latency).start()
        self.llm_base_url = self.simulator.base_url
        self.extra_env["BENCH_LLM_RPM"] = str(rpm)
        for name in WORKERS:
            self.terminate(name)
        for name in (*WORKERS, "claude"):
            self.spawn(name)
        for name in (*WORKERS, "claude"):
            self.wait_ready(name, timeout=180)
        return self.simulator.base_url

    def stop(self, *, keep: bool = False) -> None:
        if self.simulator is not None:
            self.simulator.stop()
        super().stop(keep=keep)

    def pids(self) -> dict[str, int]:
        """The root process of each part of the system (children are found by the sampler)."""
        pids = {name: proc.pid for name, proc in self.procs.items() if proc.poll() is None}
        for name, path in (
            ("postgres", self.var / "pg" / "postmaster.pid"),
            ("redis", self.var / "redis" / "redis.pid"),
        ):
            text: Any = path.read_text().split() if path.exists() else []
            if text:
                pids[name] = int(text[0])
        if self.simulator is not None and self.simulator.proc is not None:
            pids["simulator"] = self.simulator.proc.pid
        return pids
