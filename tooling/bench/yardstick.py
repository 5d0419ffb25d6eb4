"""The yardstick: a bare Celery no-op chain on a worker of its own.

`celery -A tooling.bench.yardstick worker --pool solo -Q yardstick` — one queue, a solo pool,
Celery's own defaults and nothing of the product's (no Django, no celeryconfig, no events), on the
run's Redis. A chain is `hops` tasks on that queue, each publishing the next from inside itself;
the last pushes `chain_id t0 t_end` onto a Redis list the bench reads. So the product's topology —
its pools, lanes, prefetch and settings — cannot move the yardstick, and a change to them shows
in the tickets' figures alone.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

QUEUE = "yardstick"
TASK = "tooling.bench.yardstick.noop"
DONE_KEY = "bench:yardstick:done"


def make_app(broker_url: str) -> Celery:
    """The yardstick's app: a broker URL and JSON (Celery 5's default), nothing else."""
    return Celery("yardstick", broker=broker_url, set_as_current=False)


app = make_app(os.environ.get("YARDSTICK_BROKER_URL", "redis://127.0.0.1:6379/0"))
_redis: Any = None


@app.task(name=TASK, ignore_result=True)
def noop(chain_id: str, t0: float, hops: int, step: int) -> None:
    """Hop `step` of a chain: publish the next hop, or report the chain's end."""
    global _redis
    if step + 1 < hops:
        app.send_task(TASK, args=[chain_id, t0, hops, step + 1], queue=QUEUE)
        return
    if _redis is None:
        import redis

        _redis = redis.Redis.from_url(app.conf.broker_url)
    _redis.rpush(DONE_KEY, f"{chain_id} {t0} {time.time()}")
