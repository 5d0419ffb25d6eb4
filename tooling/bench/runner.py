"""One benchmark run: start the system, seed, then the phases, each recorded; then the report.

Phases, in order (see docs/performance.md for why):
  warm-up      closed-loop, a few seconds: loads code, caches, connections; makes tickets to clone
  seed         top the database up to `existing` tickets
  noop idle    one yardstick chain at a time: bare Celery's latency per hop on an idle system
  noop         yardstick chains closed-loop        ┐ the yardstick brackets the measurement,
  saturation   tickets closed-loop: sustained rate  │ so a noisy machine moves both
  noop again   yardstick chains closed-loop        ┘
  sweep        open-loop at fractions of the sustained rate: latency against offered load
  soak         open-loop at half the sustained rate for `soak` seconds: memory over time
  scale        seed up to `scale_to`; noop, saturation, half load again
  claude       the Claude tier on (simulator): open-loop of texts no rule matches
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tooling.bench import analyze, baseline, probe, seed
from tooling.bench.corpus import corpus
from tooling.bench.load import TERMINAL, Offer, Watcher
from tooling.bench.progress import Progress
from tooling.bench.sampler import Sampler, summarise
from tooling.bench.system import BenchSystem
from tooling.bench.yardstick import make_app as make_yardstick

PIPELINE_LABELS = ("agents.parse", "agents.classify", "agents.decide", "agents.execute", "agents.escalate")
PIPELINE_LABELS += ("agents.llm_stage", "agents.deliver_callback", "agents.deliver_callbacks", "api.submit")


@dataclass
class Config:
    out: Path
    seconds: float = 30.0
    concurrency: int = 24
    fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9)
    existing: int = 10_000
    scale_to: int = 0
    soak: float = 0.0
    tiers: tuple[str, ...] = ("rules", "local")
    claude: bool = False
    claude_rate: float = 4.0
    claude_rpm: int = 600
    claude_latency: str = "lognormal:median=0.4,p99=2,min=0.1,max=4"
    customers: int = 100_000
    hops: int = 5  # a yardstick chain's length
    warmup: float = 10.0
    drain: float = 120.0
    keep: bool = False
    fuse: str | None = None  # PIPELINE_FUSE for the system; None: the product's default
    notes: list[str] = field(default_factory=list)


class Run:
    """Holds the system, the sampler and the phases' records for one run."""

    def __init__(self, cfg: Config, progress: Progress) -> None:
        self.cfg, self.progress = cfg, progress
        env = {} if cfg.fuse is None else {"PIPELINE_FUSE": cfg.fuse}
        self.system = BenchSystem(cfg.out / "system", tiers=list(cfg.tiers), env=env)
        self.phases: list[dict[str, Any]] = []
        self.texts = corpus()
        self.seed_counter = 0
        self.extra: dict[str, Any] = {}

    # --- plumbing -----------------------------------------------------------------------------------
    @property
    def conninfo(self) -> str:
        return f"host={self.system.var / 'pg'} dbname=postgres user=postgres"

    def start(self) -> None:
        t0 = time.monotonic()
        self.progress.say(f"starting the system under {self.system.var} (tiers: {', '.join(self.cfg.tiers)})")
        self.system.start()
        self.client = self.system.client_create("bench")
        self.redis = self.system.redis()
        self.yardstick = make_yardstick(self.system.yardstick_broker_url)
        self.yardstick_redis = redis.Redis.from_url(self.system.yardstick_broker_url)
        self.sampler = Sampler(self._pids).start()
        self.extra["startup_seconds"] = round(time.monotonic() - t0, 1)

    def _pids(self) -> dict[str, int]:
        return {**self.system.pids(), "bench": -os.getpid()}

    def stop(self) -> None:
        if hasattr(self, "sampler"):
            self.sampler.stop()
        self.system.stop(keep=self.cfg.keep)

    def _record(self, name: str, kind: str, t0: float, t1: float, before: dict[str, list[int]], **fields: Any) -> dict:
        after = probe.read(self.redis)
        record = {
            "name": name,
            "kind": kind,
            "started_at": round(t0, 3),
            "wall_seconds": round(t1 - t0, 1),
            "load_avg_end": [round(x, 2) for x in os.getloadavg()],
            **fields,
            "processes": summarise(self.sampler.between(t0, t1 + 1)),
            "round_trips": probe.delta(after, before),
        }
        self.phases.append(record)
        return record

    # --- phases -------------------------------------------------------------------------------------
    def load(self, name: str, *, seconds: float, closed: int = 0, rate: float = 0.0, texts: Any = None) -> dict:
        counters = self.progress.enter(name, seconds)
        self.seed_counter += 1
        offer = Offer(self.system.api_url, self.client.token, texts or self.texts, counters,
                      customers=self.cfg.customers, seed=self.seed_counter)  # fmt: skip
        load_start, before, t0 = [round(x, 2) for x in os.getloadavg()], probe.read(self.redis), time.time()

        async def go() -> None:
            async with Watcher(self.conninfo, counters) as watcher:
                if closed:
                    await offer.closed_loop(watcher, closed, seconds)
                else:
                    await offer.open_loop(watcher, rate, seconds, drain=self.cfg.drain)

        asyncio.run(go())
        t1 = time.time()
        facts = analyze.facts(self.conninfo, offer.sent, probe.marks(self.redis))
        warm = min(5.0, 0.15 * seconds)
        summary = analyze.summary(facts, window=(t0 + warm, t0 + seconds))
        offered = {"mode": "closed", "in_flight": closed} if closed else {"mode": "open", "rate": round(rate, 2)}
        record = self._record(name, "load", t0, t1, before, offered=offered, seconds=seconds,
                              load_avg_start=load_start, **summary)  # fmt: skip
        record["round_trips_per_ticket"] = per_ticket(record["round_trips"], summary["accepted"])
        record["cpu_ms_per_ticket"] = cpu_per(record["processes"], summary["accepted"])
        return record

    def noop(self, name: str, *, seconds: float, concurrency: int) -> dict:
        hops = self.cfg.hops
        counters = self.progress.enter(name, seconds)
        load_start, before, t0 = [round(x, 2) for x in os.getloadavg()], probe.read(self.redis), time.time()
        finished = baseline.run_chains(self.yardstick, self.yardstick_redis, hops=hops, concurrency=concurrency,
                                       seconds=seconds, counters=counters)  # fmt: skip
        t1 = time.time()
        warm = min(5.0, 0.15 * seconds)
        summary = analyze.chains_summary(finished, window=(t0 + warm, t0 + seconds), hops=hops)
        record = self._record(name, "noop", t0, t1, before, in_flight=concurrency,
                              seconds=seconds, load_avg_start=load_start, **summary)  # fmt: skip
        record["cpu_ms_per_chain"] = cpu_per(record["processes"], summary["chains"])
        return record

    def seed_to(self, target: int) -> dict[str, int]:
        counters = self.progress.enter(f"seed to {target:,} tickets")
        t0 = time.monotonic()

        def tick(have: int, want: int) -> None:
            counters.terminal = have

        counts = seed.seed(self.conninfo, target=target, customers=self.cfg.customers, progress=tick)
        counts["seconds"] = round(time.monotonic() - t0, 1)
        return counts

    def local_model(self) -> None:
        """Train and activate the local model in the bench's database (`manage.py retrain`)."""
        if "local" not in self.cfg.tiers:
            return
        self.progress.enter("training the local model (manage.py retrain)")
        t0 = time.monotonic()
        try:
            self.system.manage("retrain", "--if-missing", "--full", timeout=1200)
            active = self.system.sql("SELECT version FROM agents_modelversion WHERE is_active")
            self.extra["local_model"] = {"version": active[0][0] if active else None,
                                         "train_seconds": round(time.monotonic() - t0, 1)}  # fmt: skip
        except Exception as exc:  # the tier then abstains: measured as rules only, and said so
            self.cfg.notes.append(f"local model not trained ({type(exc).__name__}): measured without it")
            self.extra["local_model"] = {"error": str(exc)[-2000:]}
        time.sleep(6)  # workers look for a newly active model every 5 s

    def drain_check(self) -> dict[str, int]:
        """Wait (≤ drain) until no bench ticket is in flight; count them by status."""
        deadline = time.monotonic() + self.cfg.drain
        while True:
            rows = self.system.sql(
                "SELECT status, count(*) FROM tickets_ticket WHERE channel = 'bench' GROUP BY status"
            )
            statuses = {s: int(n) for s, n in rows}
            if all(s in TERMINAL for s in statuses) or time.monotonic() > deadline:
                return statuses
            time.sleep(1)


def cpu_per(processes: dict[str, dict[str, float]], n: int) -> dict[str, float]:
    """CPU milliseconds per ticket (or chain) for each part of the system: the cost, whatever the
    machine's other load does to the wall-clock figures."""
    if not n:
        return {}
    out = {k: round(1000 * v["cpu_seconds"] / n, 2) for k, v in processes.items() if k not in ("machine", "not_ours")}
    out["system_total"] = round(sum(v for k, v in out.items() if k not in ("bench", "yardstick")), 2)
    return out


def per_ticket(counts: dict[str, list[int]], tickets: int) -> dict[str, Any]:
    """Database round trips per ticket over the pipeline's tasks and the API's submit."""
    if not tickets:
        return {}
    per_task = {}
    total, tasks = [0, 0], 0
    for name, (calls, statements, transactions) in sorted(counts.items()):
        if name not in PIPELINE_LABELS or not calls:
            continue
        per_task[name] = {
            "calls": calls,
            "statements_per_call": round(statements / calls, 2),
            "transactions_per_call": round(transactions / calls, 2),
            "round_trips_per_call": round((statements + 2 * transactions) / calls, 2),
        }
        total[0] += statements
        total[1] += transactions
        tasks += calls if name.startswith("agents.") else 0
    return {
        "celery_tasks": round(tasks / tickets, 2),
        "statements": round(total[0] / tickets, 2),
        "transactions": round(total[1] / tickets, 2),
        "round_trips": round((total[0] + 2 * total[1]) / tickets, 2),
        "per_task": per_task,
    }
