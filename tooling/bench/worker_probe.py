"""The round-trip probe in the product's workers: `--include tooling.bench.worker_probe`.

Each task is counted under its name (`tooling.bench.probe`); importing this module installs the
probe when `BENCH_PROBE` is set. It also marks when a new ticket's first hop reached the worker
(`task_received`, in the consumer) and when a pool process began it (`task_prerun`), so the bench
can split the first hop into its parts (`probe.mark`).
"""

from __future__ import annotations

from typing import Any

from celery.signals import task_postrun, task_prerun, task_received
from django.conf import settings

from agents.pipeline.spec import SPEC
from tooling.bench import probe

FIRST = SPEC.first.task


@task_received.connect
def _task_received(request: Any = None, **_: Any) -> None:
    if request is not None and request.name == FIRST and request.args:
        probe.mark(str(request.args[0]), "received")


@task_prerun.connect
def _task_started(task: Any = None, args: Any = None, **_: Any) -> None:
    name = getattr(task, "name", "unknown")
    probe.begin(name)
    if name == FIRST and args:
        probe.mark(str(args[0]), "started")


@task_postrun.connect
def _task_finished(**_: Any) -> None:
    probe.end()


if probe.enabled():
    probe.install(settings.REDIS_URL)
