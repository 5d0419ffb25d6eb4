"""The baseline: a chain of tasks that do nothing, over the pipeline's own queues and workers.

Loaded by every bench worker (`celery -A project worker ... --include bench.noop_tasks`), so a
no-op hop pays what a stage hop pays in Celery — the broker round trips, the same pool, acks_late,
prefetch 1, events — and nothing else. Each task publishes the next from inside itself, as a
stage does after its commit; the last one pushes `chain_id t0 t_end` onto a Redis list the bench
reads. Importing this module also installs the round-trip probe (`bench.probe`).
"""

from __future__ import annotations

import time
from typing import Any

from celery import current_app, shared_task
from celery.signals import task_postrun, task_prerun
from django.conf import settings

from tooling.bench import probe

DONE_KEY = "bench:noop:done"
_redis: Any = None


def _client() -> Any:
    global _redis
    if _redis is None:
        import redis

        _redis = redis.Redis.from_url(settings.REDIS_URL)
    return _redis


@shared_task(name="tooling.bench.noop", ignore_result=True)
def noop(chain_id: str, t0: float, route: list[str], step: int) -> None:
    """Hop `step` of a no-op chain: hand on to the next queue of `route`, or report the end."""
    if step + 1 < len(route):
        current_app.send_task("tooling.bench.noop", args=[chain_id, t0, route, step + 1], queue=route[step + 1])
    else:
        _client().rpush(DONE_KEY, f"{chain_id} {t0} {time.time()}")


@task_prerun.connect
def _task_started(task: Any = None, **_: Any) -> None:
    probe.begin(getattr(task, "name", "unknown"))


@task_postrun.connect
def _task_finished(**_: Any) -> None:
    probe.end()


if probe.enabled():
    probe.install(settings.REDIS_URL)
