"""`manage.py bench_llm`: the Claude tier under twice the load its rate limit allows.

The Messages API simulator runs at a fixed limit (`--rpm`, 600 by default) in its own process;
tickets that no rule matches are offered at `--factor` (2) times that rate for `--seconds`;
`--workers` (2) Celery processes serve the `llm` queue with thread pools, sharing the Redis
limiter, and one more process serves the stage queues. Reported: the share of the limit used
while there was a backlog, the share of calls answered 429, whether every ticket reached a
terminal state, and the llm workers' memory at the start and the end.

It runs against its own database (`--database`, created on the embedded Postgres) and its own
Redis database (`--redis-db`), so it never touches the development data or another engineer's
workers. The outer command prepares a settings module and re-runs itself inside it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.db.models import Count

from tooling import llm_bench as bench

INNER = "BENCH_LLM_INNER"
TERMINAL = ("resolved", "awaiting_review", "dead_lettered")


class Command(BaseCommand):
    help = "Benchmark the Claude tier against the simulator: limit used, 429 share, terminal states, worker memory."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rpm", type=int, default=600, help="the simulator's requests per minute")
        parser.add_argument("--factor", type=float, default=2.0, help="offered load, as a multiple of the limit")
        parser.add_argument("--seconds", type=float, default=60.0, help="how long the load is offered")
        parser.add_argument("--workers", type=int, default=2, help="llm worker processes")
        parser.add_argument("--concurrency", type=int, default=16, help="threads per llm worker")
        parser.add_argument("--stage-workers", type=int, default=2, help="worker processes for the stage queues")
        parser.add_argument("--stage-concurrency", type=int, default=8, help="threads per stage worker")
        parser.add_argument(
            "--entry",
            choices=("handoff", "api"),
            default="handoff",
            help="handoff: tickets enter where classify hands them to Claude (parse and the rules already run, "
            "in the driver); api: through ticket_submit, every stage on the workers",
        )
        parser.add_argument("--latency", default="lognormal:median=0.4,p99=2,min=0.1,max=4")
        parser.add_argument("--database", default="bench_llm")
        parser.add_argument("--redis-db", type=int, default=12)
        parser.add_argument("--timeout", type=float, default=1800.0, help="give up waiting for terminal states after")
        parser.add_argument("--json", default="", help="also write the figures to this file")

    def handle(self, *args: Any, **opts: Any) -> None:
        if os.environ.get(INNER) == "1":
            self.bench(opts)
        else:
            self.prepare_and_rerun(opts)

    # --- outer: a private database, Redis db and settings module, then run inside them ----------
    def prepare_and_rerun(self, opts: dict[str, Any]) -> None:
        name = opts["database"]
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise CommandError("--database must be a plain lower-case identifier")
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{name}"')
        workdir = Path(tempfile.mkdtemp(prefix="bench_llm_"))
        port = bench.free_port()
        limits = {"rpm": opts["rpm"], "itpm": 0, "otpm": 0}
        llm = {
            "KEY_PREFIX": f"bench:{int(time.time())}:",
            "LIMITS": {"small": limits, "large": limits},
            "BATCH": {"enabled": False},
        }
        (workdir / "bench_llm_settings.py").write_text(
            "from project.settings import *  # noqa: F403\n"
            "import project.settings as _base\n"
            "from agents.llm.config import merged\n"
            f"DATABASES['default']['NAME'] = {name!r}\n"
            f"LLM = merged(getattr(_base, 'LLM', {{}}), {llm!r})\n"
            f"ANTHROPIC_API_KEY = 'bench'\nANTHROPIC_BASE_URL = 'http://127.0.0.1:{port}'\nLLM_ENABLED = True\n"
            "CLASSIFIER_TIERS = ['agents.intents.rules.RulesTier']\n"
            "DEBUG = False  # as in production: no per-connection query log growing in the workers\n"
        )
        env = {
            **os.environ,
            INNER: "1",
            "BENCH_LLM_PORT": str(port),
            "BENCH_LLM_DIR": str(workdir),
            "DJANGO_SETTINGS_MODULE": "bench_llm_settings",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(workdir), str(settings.BASE_DIR), os.environ.get("PYTHONPATH", "")]),
            "REDIS_URL": urlsplit(settings.REDIS_URL)._replace(path=f"/{opts['redis_db']}").geturl(),
        }
        argv = [sys.executable, "manage.py", "bench_llm"]
        for key in (
            "rpm",
            "factor",
            "seconds",
            "workers",
            "concurrency",
            "stage_workers",
            "stage_concurrency",
            "entry",
            "latency",
            "timeout",
            "json",
        ):
            argv += [f"--{key.replace('_', '-')}", str(opts[key])]
        code = subprocess.call(argv, env=env, cwd=settings.BASE_DIR)
        if code:
            raise CommandError(f"the benchmark failed (exit {code}); logs in {workdir}")

    # --- inner: everything runs with the bench settings -------------------------------------------
    def bench(self, opts: dict[str, Any]) -> None:
        from agents.intents.catalog import get_catalog
        from agents.intents.packs import intent_pack_load
        from agents.models import Intent
        from project.celery import app

        call_command("migrate", interactive=False, verbosity=0)
        if not Intent.objects.filter(is_active=True).exists():
            intent_pack_load(settings.INTENT_PACK)
        app.control.purge()
        workdir, port = Path(os.environ["BENCH_LLM_DIR"]), int(os.environ["BENCH_LLM_PORT"])
        procs: list[subprocess.Popen[bytes]] = []
        try:
            procs.append(bench.start_simulator(workdir, port, opts["rpm"], opts["latency"]))
            llm_workers = [
                bench.start_worker(workdir, f"llm{i}", "llm", opts["concurrency"]) for i in range(opts["workers"])
            ]
            queues = "parse,classify,decide,execute,escalate,webhooks,maintenance"
            stages = [f"stages{i}" for i in range(opts["stage_workers"])]
            procs += [
                *llm_workers,
                *(bench.start_worker(workdir, n, queues, opts["stage_concurrency"]) for n in stages),
            ]
            bench.wait_ready(app, [f"{n}@bench" for n in [*(f"llm{i}" for i in range(opts["workers"])), *stages]])
            figures = self.drive_and_measure(opts, port, llm_workers, get_catalog())
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                bench.stop(proc)
            app.control.purge()
            bench.forget_llm_keys()
        self.report(figures, opts)

    def drive_and_measure(self, opts: dict[str, Any], port: int, workers: list[Any], catalog: Any) -> dict[str, Any]:
        from tickets.models import Ticket
        from tickets.services import client_create

        client, _ = client_create(name=f"bench-{int(time.time() * 1000)}")
        rate = opts["rpm"] / 60 * opts["factor"]
        total = int(rate * opts["seconds"])
        texts = bench.texts(total + 8 * len(workers), catalog)
        offer = bench.offer_at_handoff if opts["entry"] == "handoff" else bench.offer
        self.warm_up(offer, client, texts[total:], port)  # a process's first call imports the SDK: not measured
        texts = texts[:total]
        driver = threading.Thread(target=offer, args=(client, texts, rate), daemon=True)
        started = time.monotonic()
        driver.start()
        samples: list[dict[str, Any]] = []
        deadline = started + opts["timeout"]
        while time.monotonic() < deadline:
            time.sleep(1.0)
            stats = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/stats", timeout=5))
            by_status = dict(Ticket.objects.filter(client=client).values_list("status").annotate(n=Count("id")))
            done = sum(by_status.get(s, 0) for s in TERMINAL)
            samples.append(
                {
                    "t": time.monotonic() - started,
                    "posts": stats["by_endpoint"].get("POST /v1/messages", {}),
                    "ok": stats["messages_ok"],
                    "done": done,
                    "statuses": by_status,
                    "rss_mb": [bench.rss_mb(w.pid) for w in workers],
                }
            )
            self.stdout.write(
                f"  t={samples[-1]['t']:5.0f}s  claude ok={stats['messages_ok']:5d}  "
                f"terminal={done:5d}/{total}  rss={samples[-1]['rss_mb']}"
            )
            if done >= total and not driver.is_alive():
                break
        return bench.figures(samples, opts, total)

    def warm_up(self, offer: Any, client: Any, texts: list[str], port: int) -> None:
        from tickets.models import Ticket

        offer(client, texts, rate=50.0)
        deadline = time.monotonic() + 300
        while Ticket.objects.filter(client=client).exclude(status__in=TERMINAL).exists():
            if time.monotonic() > deadline:
                raise CommandError("the warm-up tickets did not settle in 300 s")
            time.sleep(0.5)
        Ticket.objects.filter(client=client).delete()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/_sim/reset", data=b'{"keep_config": true}', method="POST"
        )
        urllib.request.urlopen(request, timeout=5).read()
        self.stdout.write(f"warmed up with {len(texts)} tickets; offering the load now")

    def report(self, figures: dict[str, Any], opts: dict[str, Any]) -> None:
        self.stdout.write(json.dumps(figures, indent=2))
        if opts["json"]:
            Path(opts["json"]).write_text(json.dumps(figures, indent=2))
