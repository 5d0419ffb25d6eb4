"""What a phase's tickets went through, read back from Postgres (the system of record).

For each ticket sent: its path (rules / local / claude / escalated / dead_lettered), its API
latency (client-side, from when the request was due), its end-to-end latency (from when the
request was due to the commit of its terminal state — the last trace's finish), each stage
attempt's own time (the trace's duration) and the hops between them (the gap from one trace's
finish to the next one's start: publish, queue, Celery's delivery, loading the ticket, the claim).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg

from agents.pipeline.spec import NAMES
from tooling.bench.load import TERMINAL, Sent

HANDED_OVER = [f"{name}_cpu" for name in NAMES]  # a stage handed to Claude (agents.pipeline.spec.handed_over)
TICKETS = """
SELECT id::text, status, extract(epoch FROM created_at), context ?| %s, context->'classify'->>'tier'
FROM tickets_ticket WHERE id = ANY(%s::uuid[])
"""
TRACES = """
SELECT ticket_id::text, stage, status, tier, extract(epoch FROM started_at), extract(epoch FROM finished_at), duration_ms
FROM agents_trace WHERE ticket_id = ANY(%s::uuid[]) ORDER BY ticket_id, started_at, id
"""


@dataclass
class Fact:
    """One ticket's story, as numbers."""

    sent: Sent
    status: str = "missing"
    path: str = "missing"
    terminal_at: float | None = None
    stages: list[tuple[str, float]] = field(default_factory=list)  # (stage label, ms)
    hops: list[tuple[str, float]] = field(default_factory=list)  # (from→to, ms)
    # The first hop in parts (the workers' marks, `probe.mark`): the ticket's row to the message in
    # the worker's hands (commit, publish, broker), to a pool process starting it, to its first
    # stage starting (loading and claiming the ticket).
    first_hop: dict[str, float] = field(default_factory=dict)

    @property
    def e2e_ms(self) -> float | None:
        return None if self.terminal_at is None else (self.terminal_at - self.sent.due) * 1000

    @property
    def api_ms(self) -> float:
        return (self.sent.answered - self.sent.due) * 1000


def pct(values: list[float]) -> dict[str, float]:
    """p50 / p95 / p99 / mean / max and the count, rounded to 0.1."""
    if not values:
        return {"n": 0}
    arr = np.asarray(values, dtype=float)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {
        "n": int(arr.size),
        "p50": round(float(p50), 1),
        "p95": round(float(p95), 1),
        "p99": round(float(p99), 1),
        "mean": round(float(arr.mean()), 1),
        "max": round(float(arr.max()), 1),
    }


def _label(stage: str, tier: str) -> str:
    return f"{stage}@llm" if tier == "claude" else stage


def facts(conninfo: str, sent: list[Sent], marks: dict[str, dict[str, float]] | None = None) -> list[Fact]:
    """Read back every accepted ticket of `sent` and its traces (and its first hop's marks)."""
    ids = [s.ticket_id for s in sent if s.ticket_id]
    tickets: dict[str, tuple[Any, ...]] = {}
    traces: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for i in range(0, len(ids), 5000):
            chunk = ids[i : i + 5000]
            for row in conn.execute(TICKETS, (HANDED_OVER, chunk)).fetchall():
                tickets[row[0]] = row
            for row in conn.execute(TRACES, (chunk,)).fetchall():
                traces[row[0]].append(row)
    out = []
    for s in sent:
        fact = Fact(sent=s)
        row = tickets.get(s.ticket_id)
        if row is not None:
            _, fact.status, created, claude, tier = row
            fact.path = _path(fact.status, bool(claude), tier or "")
            _timeline(fact, float(created), traces.get(s.ticket_id, []))
            _first_hop(fact, float(created), (marks or {}).get(str(s.ticket_id), {}), traces.get(s.ticket_id, []))
        out.append(fact)
    return out


def _first_hop(fact: Fact, created: float, marks: dict[str, float], rows: list[tuple[Any, ...]]) -> None:
    received, started = marks.get("received"), marks.get("started")
    if received is None or started is None or not rows:
        return
    fact.first_hop = {
        "to the worker": (received - created) * 1000,
        "to a pool process": (started - received) * 1000,
        "load and claim": (float(rows[0][4]) - started) * 1000,
    }


def _path(status: str, claude: bool, tier: str) -> str:
    if claude:
        return "claude"
    if status in ("awaiting_review", "dead_lettered"):
        return "escalated" if status == "awaiting_review" else "dead_lettered"
    if status == "resolved":
        return tier or "unknown"
    return "in_flight"


def _timeline(fact: Fact, created: float, rows: list[tuple[Any, ...]]) -> None:
    previous, at = "api", created
    for _, stage, _status, tier, started, finished, duration in rows:
        label = _label(stage, tier or "")
        fact.hops.append((f"{previous}→{label}", (float(started) - at) * 1000))
        fact.stages.append((label, float(duration)))
        previous, at = label, float(finished)
    if rows and fact.status in TERMINAL:
        fact.terminal_at = float(rows[-1][5])


def summary(fs: list[Fact], *, window: tuple[float, float]) -> dict[str, Any]:
    """The phase's figures: rates over `window` (wall times), latencies, stages, hops, paths."""
    t0, t1 = window
    span = max(t1 - t0, 1e-9)
    accepted = [f for f in fs if f.sent.ticket_id]
    terminal_in_window = sum(1 for f in fs if f.terminal_at is not None and t0 <= f.terminal_at <= t1)
    e2e: dict[str, list[float]] = defaultdict(list)
    for f in accepted:
        if f.e2e_ms is not None:
            e2e["all"].append(f.e2e_ms)
            e2e[f.path].append(f.e2e_ms)
    stages: dict[str, list[float]] = defaultdict(list)
    hops: dict[str, list[float]] = defaultdict(list)
    overhead: list[float] = []
    first_hop: dict[str, list[float]] = defaultdict(list)
    for f in accepted:
        for part, ms in f.first_hop.items():
            first_hop[part].append(ms)
        for label, ms in f.stages:
            stages[label].append(ms)
        for label, ms in f.hops:
            hops[label].append(ms)
        if f.e2e_ms is not None and f.path in ("rules", "local", "escalated"):
            overhead.append(f.e2e_ms - sum(ms for _, ms in f.stages))
    http = Counter(str(f.sent.status or f.sent.error) for f in fs)
    return {
        "sent": len(fs),
        "sent_per_s": round(sum(1 for f in fs if t0 <= f.sent.due <= t1) / span, 2),
        "accepted": len(accepted),
        "http": dict(http),
        "terminal_per_s": round(terminal_in_window / span, 2),
        "statuses": dict(Counter(f.status for f in accepted)),
        "paths": dict(Counter(f.path for f in accepted)),
        "not_terminal": sum(1 for f in accepted if f.status not in TERMINAL),
        "api_ms": pct([f.api_ms for f in accepted]),
        "e2e_ms": {path: pct(v) for path, v in sorted(e2e.items())},
        "stage_ms": {k: pct(v) for k, v in sorted(stages.items())},
        "hop_ms": {k: pct(v) for k, v in sorted(hops.items(), key=lambda kv: -len(kv[1]))[:12]},
        "overhead_ms": pct(overhead),
        "first_hop_ms": {k: pct(v) for k, v in first_hop.items()},
    }


def chains_summary(finished: list[tuple[float, float]], *, window: tuple[float, float], hops: int) -> dict[str, Any]:
    """The no-op chains' rate over `window` and their latency (whole chain, and per hop)."""
    t0, t1 = window
    in_window = [end for _, end in finished if t0 <= end <= t1]
    latencies = [(end - start) * 1000 for start, end in finished]
    return {
        "hops": hops,
        "chains": len(finished),
        "chains_per_s": round(len(in_window) / max(t1 - t0, 1e-9), 2),
        "tasks_per_s": round(hops * len(in_window) / max(t1 - t0, 1e-9), 1),
        "chain_ms": pct(latencies),
        "per_hop_ms": pct([ms / hops for ms in latencies]),
    }
