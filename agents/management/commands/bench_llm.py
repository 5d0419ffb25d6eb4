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
import random
import re
import signal
import socket
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

INNER = "BENCH_LLM_INNER"
WORDS = ("blue river", "quiet morning", "green window", "long table", "small garden", "old bridge", "warm kitchen")
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
            "in the driver); api: through ticket_create, every stage on the workers",
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
        port = _free_port()
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
            "CLASSIFIER_TIERS = ['agents.tiers.rules.RulesTier']\n"
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
        from agents.catalog import get_catalog
        from agents.intents import intent_pack_load
        from agents.models import Intent
        from project.celery import app

        call_command("migrate", interactive=False, verbosity=0)
        if not Intent.objects.filter(is_active=True).exists():
            intent_pack_load(settings.INTENT_PACK)
        app.control.purge()
        workdir, port = Path(os.environ["BENCH_LLM_DIR"]), int(os.environ["BENCH_LLM_PORT"])
        procs: list[subprocess.Popen[bytes]] = []
        try:
            procs.append(_start_simulator(workdir, port, opts["rpm"], opts["latency"]))
            llm_workers = [
                _start_worker(workdir, f"llm{i}", "llm", opts["concurrency"]) for i in range(opts["workers"])
            ]
            queues = "parse,classify,decide,execute,escalate,webhooks,maintenance"
            stages = [f"stages{i}" for i in range(opts["stage_workers"])]
            procs += [*llm_workers, *(_start_worker(workdir, n, queues, opts["stage_concurrency"]) for n in stages)]
            _wait_ready(app, [f"{n}@bench" for n in [*(f"llm{i}" for i in range(opts["workers"])), *stages]])
            figures = self.drive_and_measure(opts, port, llm_workers, get_catalog())
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                _stop(proc)
            app.control.purge()
        self.report(figures, opts)

    def drive_and_measure(self, opts: dict[str, Any], port: int, workers: list[Any], catalog: Any) -> dict[str, Any]:
        from tickets.models import Ticket
        from tickets.services import client_create

        client, _ = client_create(name=f"bench-{int(time.time() * 1000)}")
        rate = opts["rpm"] / 60 * opts["factor"]
        total = int(rate * opts["seconds"])
        texts = _texts(total + 8 * len(workers), catalog)
        offer = _offer_at_handoff if opts["entry"] == "handoff" else _offer
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
                    "rss_mb": [_rss_mb(w.pid) for w in workers],
                }
            )
            self.stdout.write(
                f"  t={samples[-1]['t']:5.0f}s  claude ok={stats['messages_ok']:5d}  "
                f"terminal={done:5d}/{total}  rss={samples[-1]['rss_mb']}"
            )
            if done >= total and not driver.is_alive():
                break
        return _figures(samples, opts, total)

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


def _figures(samples: list[dict[str, Any]], opts: dict[str, Any], total: int) -> dict[str, Any]:
    """Limit used while there was a backlog, 429 share, terminal states, llm worker memory."""
    rate = opts["rpm"] / 60
    busy = [s for s in samples if s["ok"] > 0]
    first = busy[0]
    last = next(s for s in busy if s["ok"] == busy[-1]["ok"])  # when the last call was answered
    steady = next((s for s in busy if s["t"] >= first["t"] + 5), first)
    posts = samples[-1]["posts"]
    calls = sum(posts.values())
    warm = next((s for s in samples if s["t"] >= first["t"] + 10), first)
    return {
        "limit_rpm": opts["rpm"],
        "offered_per_minute": round(rate * 60 * opts["factor"]),
        "tickets": total,
        "llm_workers": opts["workers"],
        "threads_per_worker": opts["concurrency"],
        "claude_calls": calls,
        "answered_ok": samples[-1]["ok"],
        "limit_used_pct": round(100 * (last["ok"] - first["ok"]) / (rate * max(1e-9, last["t"] - first["t"])), 1),
        "limit_used_pct_steady": round(
            100 * (last["ok"] - steady["ok"]) / (rate * max(1e-9, last["t"] - steady["t"])), 1
        ),
        "answered_429_pct": round(100 * posts.get("429", 0) / max(1, calls), 3),
        "all_terminal": samples[-1]["done"] == total,
        "statuses": samples[-1]["statuses"],
        "seconds_to_drain": round(last["t"], 1),
        "llm_worker_rss_mb_start": warm["rss_mb"],
        "llm_worker_rss_mb_end": samples[-1]["rss_mb"],
        "llm_worker_rss_mb_peak": [max(s["rss_mb"][i] for s in samples) for i in range(opts["workers"])],
    }


def _texts(total: int, catalog: Any) -> list[str]:
    """Requests no rule recognises (so each goes to Claude), all different (so none is a cache hit)."""
    from agents.tiers.rules import RulesTier

    rules, rng = RulesTier(), random.Random(1)
    intents = sorted(name for name, p in catalog.items() if not p.always_review)
    texts: list[str] = []
    while len(texts) < total:
        confidence = " [[confidence:0.97]]" if rng.random() < 0.9 else ""  # a tenth left to the simulator
        text = (
            f"Hello, my question {len(texts)}-{rng.randrange(10**9)} is about the {rng.choice(WORDS)} "
            f"and the {rng.choice(WORDS)} [[intent:{rng.choice(intents)}]]{confidence}"
        )
        if rules.classify(text, catalog) is None:
            texts.append(text)
    return texts


def _offer(client: Any, texts: list[str], rate: float) -> None:
    from tickets.services import ticket_create

    started = time.monotonic()
    for i, text in enumerate(texts):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        ticket_create(client=client, payload={"body": text, "customer_ref": f"c{i % 97}", "channel": "api"})
    connection.close()


def _offer_at_handoff(client: Any, texts: list[str], rate: float) -> None:
    """Tickets as classify leaves them when the rules are unsure: parsed, handed over, on the llm queue."""
    import uuid

    from celery import current_app

    from agents.catalog import get_catalog
    from agents.stages import STAGES
    from agents.stages.types import StageContext, TicketInput
    from agents.tiers.rules import RulesTier
    from tickets.models import Status, Ticket

    catalog, rules, contexts = get_catalog(), RulesTier(), []
    for text in texts:  # the cheap stages, ahead of time: only the hand-over is timed
        ticket = TicketInput(str(uuid.uuid4()), client.pk, "bench", "api", "", text, 1)
        parsed = STAGES["parse"](ticket, StageContext()).output
        ticket = TicketInput(ticket.id, client.pk, "bench", "api", "", text, 1, context={"parse": parsed})
        cheap = STAGES["classify"](ticket, StageContext(catalog=catalog, tiers=[rules], can_handoff=True))
        assert cheap.handoff == "llm", text
        contexts.append((ticket.id, {"parse": parsed, "classify_cpu": cheap.output}))
    started = time.monotonic()
    for i, (text, (ticket_id, context)) in enumerate(zip(texts, contexts, strict=True)):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        Ticket.objects.create(
            pk=ticket_id,
            client=client,
            body=text,
            customer_ref=f"c{i % 97}",
            channel="api",
            status=Status.CLASSIFYING,
            context=context,
        )
        current_app.send_task("agents.llm_stage", args=[ticket_id, "classify"])
    connection.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_simulator(workdir: Path, port: int, rpm: int, latency: str) -> subprocess.Popen[bytes]:
    out = workdir / "simulator.log"
    with open(out, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agents.llm.simulator",
                "--port",
                str(port),
                "--rpm",
                str(rpm),
                "--latency",
                latency,
                "--seed",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=settings.BASE_DIR,
        )
    deadline = time.monotonic() + 30
    while "listening" not in out.read_text() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if "listening" not in out.read_text():
        raise CommandError(f"the simulator did not start: see {out}")
    return proc


def _start_worker(workdir: Path, name: str, queues: str, threads: int) -> subprocess.Popen[bytes]:
    log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - kept open for the worker's life
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "project",
            "worker",
            "-Q",
            queues,
            "--pool",
            "threads",
            "--concurrency",
            str(threads),
            "-n",
            f"{name}@bench",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "WARNING",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=settings.BASE_DIR,
    )


def _wait_ready(app: Any, names: list[str], timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answered = {name for reply in app.control.ping(destination=names, timeout=1.0) for name in reply}
        if answered >= set(names):
            return
    raise CommandError(f"workers not ready after {timeout:.0f}s: {names}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0
