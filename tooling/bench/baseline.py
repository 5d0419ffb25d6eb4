"""Closed-loop no-op chains on the yardstick worker (`tooling.bench.yardstick`).

`concurrency` chains in flight, each `hops` hops long; each chain's end starts a new one. The
chains' rate and latency are Celery's own cost on this machine at this moment, measured beside the
tickets so that a noisy machine moves both.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from celery import Celery

from tooling.bench.load import Counters
from tooling.bench.yardstick import DONE_KEY, QUEUE, TASK


def run_chains(
    app: Celery, redis: Any, *, hops: int, concurrency: int, seconds: float, counters: Counters
) -> list[tuple[float, float]]:
    """Closed-loop chains for `seconds`; returns (start, end) wall times of every finished chain."""
    redis.delete(DONE_KEY)

    def send() -> None:
        app.send_task(TASK, args=[uuid.uuid4().hex, time.time(), hops, 0], queue=QUEUE)
        counters.sent += 1

    deadline, in_flight, finished = time.monotonic() + seconds, 0, []
    for _ in range(concurrency):
        send()
        in_flight += 1
    last = time.monotonic()
    while in_flight:
        item = redis.blpop(DONE_KEY, timeout=1)
        if item is None:
            if time.monotonic() - last > 60:  # a chain lost: say so rather than wait forever
                counters.extra["noop_lost"] = in_flight
                break
            continue
        last = time.monotonic()
        _, t0, t1 = item[1].decode().split()
        finished.append((float(t0), float(t1)))
        in_flight -= 1
        counters.terminal += 1
        if time.monotonic() < deadline:
            send()
            in_flight += 1
        counters.in_flight = in_flight
    return finished
