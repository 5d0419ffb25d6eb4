"""The parts of `manage.py bench_llm`: processes, load, sampling and figures (see that command)."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError
from django.db import connection

WORDS = ("blue river", "quiet morning", "green window", "long table", "small garden", "old bridge", "warm kitchen")


def figures(samples: list[dict[str, Any]], opts: dict[str, Any], total: int) -> dict[str, Any]:
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


def texts(total: int, catalog: Any) -> list[str]:
    """Requests no rule recognises (so each goes to Claude), all different (so none is a cache hit)."""
    from agents.intents.rules import RulesTier

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


def offer(client: Any, texts: list[str], rate: float) -> None:
    from agents.pipeline.intake import ticket_submit

    started = time.monotonic()
    for i, text in enumerate(texts):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        ticket_submit(client=client, payload={"body": text, "customer_ref": f"c{i % 97}", "channel": "api"})
    connection.close()


def offer_at_handoff(client: Any, texts: list[str], rate: float) -> None:
    """Tickets as classify leaves them when the rules are unsure: parsed, handed over, on the llm queue."""
    import uuid

    from celery import current_app

    from agents.intents.catalog import get_catalog
    from agents.intents.rules import RulesTier
    from agents.stages import STAGES
    from agents.stages.types import StageContext, TicketInput
    from tickets.models import Ticket

    catalog, rules, contexts = get_catalog(), RulesTier(), []
    for text in texts:  # the cheap stages, ahead of time: only the hand-over is timed
        ticket = TicketInput(str(uuid.uuid4()), client.pk, "bench", "api", "", text, 1)
        parsed = STAGES["parse"](ticket, StageContext()).output
        ticket = TicketInput(ticket.id, client.pk, "bench", "api", "", text, 1, context={"parse": parsed})
        cheap = STAGES["classify"](ticket, StageContext(catalog=catalog, tiers=[rules], can_handoff=True))
        assert cheap.handoff == "claude", text
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
            status="classifying",
            context=context,
        )
        current_app.send_task("agents.llm_stage", args=[ticket_id, "classify"])
    connection.close()


def forget_llm_keys() -> None:
    """The run's limiter, cache and spend keys (its prefix is unique to the run)."""
    from agents.llm.config import llm_settings
    from agents.llm.store import redis_client

    r = redis_client()
    for name in r.scan_iter(match=llm_settings()["KEY_PREFIX"] + "*", count=1000):
        r.delete(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_simulator(workdir: Path, port: int, rpm: int, latency: str) -> subprocess.Popen[bytes]:
    out = workdir / "simulator.log"
    with open(out, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tooling.llm_simulator",
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


def start_worker(workdir: Path, name: str, queues: str, threads: int) -> subprocess.Popen[bytes]:
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


def wait_ready(app: Any, names: list[str], timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answered = {name for reply in app.control.ping(destination=names, timeout=1.0) for name in reply}
        if answered >= set(names):
            return
    raise CommandError(f"workers not ready after {timeout:.0f}s: {names}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0
