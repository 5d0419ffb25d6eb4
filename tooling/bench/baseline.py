"""The no-op chain: what Celery alone costs for the hops a ticket makes, on the same run's workers.

A chain is `len(route)` `bench.noop` tasks, hop i on queue `route[i]` — by default the queues a
ticket of the non-Claude path visits (parse, classify, decide, execute or escalate, then the
callback on webhooks). Closed-loop: `concurrency` chains in flight; each end starts a new one.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from celery import Celery

from tooling.bench.load import Counters
from tooling.bench.noop_tasks import DONE_KEY

ROUTE = ("parse", "classify", "decide", "execute", "webhooks")


def noop_app(broker_url: str) -> Celery:
    """A bare Celery app that publishes to the system's broker as the project's tasks do (JSON)."""
    app = Celery("bench", broker=broker_url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True)
    return app


def run_chains(
    app: Celery, redis: Any, *, route: tuple[str, ...], concurrency: int, seconds: float, counters: Counters
) -> list[tuple[float, float]]:
    """Closed-loop chains for `seconds`; returns (start, end) wall times of every finished chain."""
    redis.delete(DONE_KEY)
    route_list = list(route)

    def send() -> None:
        app.send_task("tooling.bench.noop", args=[uuid.uuid4().hex, time.time(), route_list, 0], queue=route_list[0])
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
