"""Existing tickets: top the database up to N tickets, cloned in SQL from tickets the system made.

Each clone copies a real terminal ticket of the warm-up — its body, context, traces and ledger rows
(so row sizes, TOAST and every index are as in production) — under a new id, a customer from the
bench's pool (so `customer_history` finds real history), and a creation time in the last 20 days
(inside trace retention, so the archiver leaves them alone). Batches of `batch` rows, then
VACUUM ANALYZE, so autovacuum does not wake up in the middle of a measurement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

TICKET_COLS = (
    "client_id, idempotency_key, request_hash, customer_ref, channel, subject, body, metadata, priority, "
    "callback_url, status, stage_attempts, intent, confidence, action, reply, context, cost_usd, "
    "created_at, updated_at, resolved_at"
)
TRACE_COLS = (
    "stage, attempt, status, duration_ms, confidence, tier, model, input_tokens, output_tokens, cost_usd, "
    "cache_hit, error_class, error_message, output"
)
LEDGER_COLS = "tool, arguments, status, attempts, result, last_error"

SOURCES = """
CREATE TEMP TABLE seed_src AS
SELECT row_number() OVER (ORDER BY created_at) - 1 AS n, id, created_at FROM tickets_ticket
WHERE status IN ('resolved', 'awaiting_review') AND channel = 'bench' ORDER BY created_at LIMIT 2000
"""
BATCH = """
CREATE TEMP TABLE seed_batch AS
SELECT gen_random_uuid() AS id, s.id AS src, s.created_at AS src_at, g,
       now() - random() * interval '20 days' AS ts
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g JOIN seed_src s ON s.n = g %% %(sources)s
"""
TICKETS = f"""
INSERT INTO tickets_ticket (id, {TICKET_COLS})
SELECT b.id, t.client_id, NULL, t.request_hash, 'cust-' || (b.g %% %(customers)s), 'seed', t.subject, t.body,
       t.metadata, t.priority, t.callback_url, t.status, 0, t.intent, t.confidence, t.action, t.reply, t.context,
       t.cost_usd, b.ts, b.ts + (t.updated_at - t.created_at), b.ts + (t.resolved_at - t.created_at)
FROM seed_batch b JOIN tickets_ticket t ON t.id = b.src
"""
TRACES = f"""
INSERT INTO agents_trace (ticket_id, started_at, finished_at, {TRACE_COLS})
SELECT b.id, b.ts + (tr.started_at - b.src_at), b.ts + (tr.finished_at - b.src_at), {
    ", ".join("tr." + c.strip() for c in TRACE_COLS.split(","))
}
FROM seed_batch b JOIN agents_trace tr ON tr.ticket_id = b.src
"""
LEDGER = f"""
INSERT INTO agents_sideeffect (ticket_id, idempotency_key, created_at, finished_at, {LEDGER_COLS})
SELECT b.id, b.id::text || substr(se.idempotency_key, 37), b.ts, b.ts, {
    ", ".join("se." + c.strip() for c in LEDGER_COLS.split(","))
}
FROM seed_batch b JOIN agents_sideeffect se ON se.ticket_id = b.src
"""


def ticket_count(conn: psycopg.Connection[Any]) -> int:
    return int(conn.execute("SELECT count(*) FROM tickets_ticket").fetchone()[0])  # type: ignore[index]


def seed(
    conninfo: str,
    *,
    target: int,
    customers: int,
    batch: int = 100_000,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Add cloned tickets until the table holds `target`; returns how many were added and the counts."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        have = ticket_count(conn)
        added = 0
        if have < target:
            conn.execute(SOURCES)
            sources = int(conn.execute("SELECT count(*) FROM seed_src").fetchone()[0])  # type: ignore[index]
            if not sources:
                raise RuntimeError("no terminal bench tickets to clone: run the warm-up first")
            while have + added < target:
                n = min(batch, target - have - added)
                with conn.transaction():
                    conn.execute(BATCH, {"lo": added, "hi": added + n - 1, "sources": sources})
                    for statement in (TICKETS, TRACES, LEDGER):
                        conn.execute(statement, {"customers": customers})
                    conn.execute("DROP TABLE seed_batch")
                added += n
                if progress:
                    progress(have + added, target)
            conn.execute("DROP TABLE seed_src")
        conn.execute("VACUUM ANALYZE tickets_ticket, agents_trace, agents_sideeffect")
        counts = {
            table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
            for table in ("tickets_ticket", "agents_trace", "agents_sideeffect")
        }
    return {"added": added, **counts}
