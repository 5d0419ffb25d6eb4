"""Counting database round trips per task (workers) and per request (API), bench processes only.

Installed by `tooling.bench.worker_probe` (which the bench's workers load with `--include`) and by
`bench.gunicorn_conf` (the bench's API), when `BENCH_PROBE=1`. It wraps psycopg itself rather than
Django's `execute_wrapper`, so what Django does around the queries is counted too: the health
check's `SELECT 1`, savepoints, and each transaction's `BEGIN` / `COMMIT`. Counts are kept per
label (the running task's name, or `api`) in the process and flushed to a Redis hash once a
second (`bench:probe`, one field per pid), so counting adds no round trip to the hot path.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from typing import Any

import psycopg

KEY = "bench:probe"
MARKS_KEY = "bench:marks"
_local = threading.local()
_lock = threading.Lock()
# label -> [calls (tasks or requests), statements, transactions]
_counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
_installed = False
# (ticket id, what, wall time): moments of a ticket's first hop inside the worker, flushed with the counts.
_marks: list[tuple[str, str, float]] = []


def label() -> str:
    return getattr(_local, "label", "other")


def begin(name: str) -> None:
    """A task or request starts in this thread: count what follows under `name`."""
    _local.label = name
    with _lock:
        _counts[name][0] += 1


def end() -> None:
    _local.label = "other"


def mark(ticket_id: str, what: str) -> None:
    """Note that `what` happened to the ticket now (flushed to Redis with the counts)."""
    with _lock:
        _marks.append((ticket_id, what, time.time()))


def _count(index: int) -> None:
    with _lock:
        _counts[label()][index] += 1


def _patch() -> None:
    cursor_execute, cursor_many = psycopg.Cursor.execute, psycopg.Cursor.executemany
    commit, rollback = psycopg.Connection.commit, psycopg.Connection.rollback

    def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        _count(1)
        return cursor_execute(self, *args, **kwargs)

    def executemany(self: Any, *args: Any, **kwargs: Any) -> Any:
        _count(1)
        return cursor_many(self, *args, **kwargs)

    # A transaction costs a BEGIN and a COMMIT (or ROLLBACK) on top of its statements; psycopg
    # sends nothing when no transaction is open, so neither do we count one.
    def counted_commit(self: Any) -> None:
        if self.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            _count(2)
        commit(self)

    def counted_rollback(self: Any) -> None:
        if self.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            _count(2)
        rollback(self)

    psycopg.Cursor.execute = execute  # type: ignore[method-assign]
    psycopg.Cursor.executemany = executemany  # type: ignore[method-assign]
    psycopg.Connection.commit = counted_commit  # type: ignore[method-assign]
    psycopg.Connection.rollback = counted_rollback  # type: ignore[method-assign]


def snapshot() -> dict[str, list[int]]:
    with _lock:
        return {k: list(v) for k, v in _counts.items()}


def _flush_forever(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    while True:
        time.sleep(1.0)
        with _lock:
            marks = _marks[:]
            del _marks[:]
        try:
            client.hset(KEY, str(os.getpid()), json.dumps(snapshot()))
            if marks:
                client.rpush(MARKS_KEY, *(f"{t} {what} {at}" for t, what, at in marks))
        except redis.RedisError:
            pass  # the bench's Redis restarting: the next flush catches up


def enabled() -> bool:
    return os.environ.get("BENCH_PROBE") == "1"


def install(redis_url: str) -> bool:
    """Patch psycopg and start the flusher, once per process, when BENCH_PROBE=1."""
    global _installed
    if _installed or not enabled():
        return False
    _installed = True
    _patch()
    _start_flusher(redis_url)
    # A prefork pool's children are forked from this process without its threads: each child
    # counts from zero (what it inherited is the parent's, flushed by the parent) and flushes its own.
    os.register_at_fork(after_in_child=lambda: _after_fork(redis_url))
    return True


def _after_fork(redis_url: str) -> None:
    global _lock
    _lock = threading.Lock()  # another thread of the parent may have held it at the fork
    _counts.clear()
    _marks.clear()
    _start_flusher(redis_url)


def _start_flusher(redis_url: str) -> None:
    threading.Thread(target=_flush_forever, args=(redis_url,), name="bench-probe", daemon=True).start()


def read(client: Any) -> dict[str, list[int]]:
    """Totals per label over every process that flushed (the bench side)."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for raw in client.hgetall(KEY).values():
        for name, values in json.loads(raw).items():
            for i, v in enumerate(values):
                totals[name][i] += v
    return dict(totals)


def delta(after: dict[str, list[int]], before: dict[str, list[int]]) -> dict[str, list[int]]:
    """What was counted between two `read`s."""
    zero = [0, 0, 0]
    return {k: [a - b for a, b in zip(v, before.get(k, zero), strict=True)] for k, v in after.items()}


def marks(client: Any) -> dict[str, dict[str, float]]:
    """Every ticket's first-hop marks so far, by ticket id: {"received": t, "started": t}."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for raw in client.lrange(MARKS_KEY, 0, -1):
        ticket, what, at = raw.decode().split()
        out[ticket].setdefault(what, float(at))  # a redelivery keeps the first
    return dict(out)
