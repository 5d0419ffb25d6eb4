"""Health: `/healthz` (the process answers), `/readyz` (it can do its work), and workers' heartbeats.

- `/healthz` touches nothing: a liveness probe must not restart the API because Postgres is away.
- `/readyz` asks Postgres (`SELECT 1`), the broker (a connection and, on Redis, a PING) and whether
  every migration is applied; 503 with the failing checks otherwise, so a load balancer sends no
  request to an instance that would fail it.
- A worker has no HTTP port. `WorkerHeartbeat`, a consumer bootstep, touches `WORKER_HEARTBEAT_FILE`
  every few seconds while the consumer holds a live broker connection (the liveness probe checks
  the file's age: `deploy/worker-alive`), and records in Redis which queues this worker consumes and
  how many of their tasks it holds (reserved or running). The API's metrics read that record
  (`live_workers`): `pipeline_queue_workers` (an alert fires for a queue no live worker serves) and
  `pipeline_queue_in_flight` (queued plus in flight is the work in the system, on which KEDA scales).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import bootsteps
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from kombu.transport.native_delayed_delivery import _delay_prefix_re as _DELAY_BITS

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = float(os.environ.get("WORKER_HEARTBEAT_SECONDS", 5))
# A worker whose record is older than this is counted gone (three missed heartbeats).
HEARTBEAT_STALE_SECONDS = 3 * HEARTBEAT_SECONDS + 2
REGISTRY_KEY = "pipeline:workers"
_migrated: dict[str, bool] = {}


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers HTTP."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: Postgres answers, migrations are applied, the broker answers.

    `?skip=broker` leaves the broker out: a Service's readiness probe uses it, so a broker blip does
    not take every web pod out of the Service at once; the API itself then answers 503 with
    Retry-After (backpressure), which a client can act on, instead of the ingress's error page."""
    checks = {"postgres": check_postgres, "migrations": check_migrations, "broker": check_broker}
    if "broker" in request.GET.getlist("skip"):
        del checks["broker"]
    failed: dict[str, str] = {}
    for name, check in checks.items():
        try:
            check()
        except Exception as exc:  # any failure means not ready; the reason goes in the answer
            failed[name] = f"{type(exc).__name__}: {exc}"[:300]
    if failed:
        return JsonResponse({"status": "unavailable", "failed": failed}, status=503)
    return JsonResponse({"status": "ok", "checks": sorted(checks)})


class ProbeMiddleware:
    """Answers the probes and the metrics scrape before Django checks the Host header: kubelet and
    Prometheus address a pod by its IP, which no ALLOWED_HOSTS names. Everything else is untouched."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = _probe_views().get(request.path_info)
        return view(request) if view else self.get_response(request)


def _probe_views() -> dict[str, Callable[[HttpRequest], HttpResponse]]:
    from project.access import internal_only
    from project.metrics import metrics_view

    # /metrics keeps its guard: only METRICS_ALLOWED_CIDRS or the bearer METRICS_TOKEN (project/access.py).
    return {"/healthz": healthz, "/readyz": readyz, "/metrics": internal_only(metrics_view)}


def check_postgres() -> None:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT 1")


def check_migrations() -> None:
    """Every migration on disk is applied (remembered once true: migrations are not undone live)."""
    if _migrated.get(DEFAULT_DB_ALIAS):
        return
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        raise RuntimeError(f"{len(plan)} migration(s) not applied, first {plan[0][0]}")
    _migrated[DEFAULT_DB_ALIAS] = True


def check_broker(timeout: float = 3.0) -> None:
    """A new broker connection, and a channel (kombu's Redis channel PINGs when it opens)."""
    from django.conf import settings

    from project.celery import app

    with app.connection_for_write(settings.CELERY_BROKER_URL, connect_timeout=timeout) as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout)
        conn.default_channel  # noqa: B018 - opening it is the check


# --- Workers ------------------------------------------------------------------------------------
def heartbeat_file() -> Path:
    return Path(os.environ.get("WORKER_HEARTBEAT_FILE", "/tmp/celery-worker-alive"))


def _redis() -> Any:
    from project.redisconn import redis_client

    return redis_client()


def _registry_key() -> str:
    from django.conf import settings

    return settings.BROKER_KEY_PREFIX + REGISTRY_KEY


def in_flight_by_queue() -> dict[str, int]:
    """Tasks this worker holds (reserved or running), by the queue they came from."""
    from celery.worker import state

    return dict(Counter(_queue_of(r.delivery_info or {}) for r in list(state.reserved_requests)))


def _queue_of(delivery_info: dict[str, Any]) -> str:
    # RabbitMQ's delayed delivery prefixes the routing key with the delay's bits ("0.1.…").
    return _DELAY_BITS.sub("", delivery_info.get("routing_key") or "?", count=1)


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Touch the heartbeat file and record this worker in Redis while the consumer is connected."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.timer_ref: Any = None

    def start(self, parent: Any) -> None:
        self.beat(parent)
        self.timer_ref = parent.timer.call_repeatedly(HEARTBEAT_SECONDS, self.beat, (parent,), priority=10)

    def stop(self, parent: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)
        heartbeat_file().unlink(missing_ok=True)
        try:
            _redis().hdel(_registry_key(), parent.hostname)
        except Exception:
            log.warning("could not remove this worker from the registry", exc_info=True)

    def beat(self, parent: Any) -> None:
        connection = parent.connection
        if connection is None or not connection.connected:
            return  # no broker: the file ages, and the probe says so if it lasts
        path = heartbeat_file()
        path.touch()
        queues = sorted(q.name for q in parent.task_consumer.queues) if parent.task_consumer else []
        record = {"at": time.time(), "queues": queues, "in_flight": in_flight_by_queue(), "host": socket.gethostname()}
        try:
            _redis().hset(_registry_key(), parent.hostname, json.dumps(record))
        except Exception:
            log.warning("could not record this worker's heartbeat in Redis", exc_info=True)


def live_workers(now: float | None = None) -> dict[str, dict[str, Any]]:
    """Workers whose last heartbeat is recent, by node name; stale records are removed."""
    now = time.time() if now is None else now
    client, key = _redis(), _registry_key()
    live, stale = {}, []
    for name, raw in client.hgetall(key).items():
        record = json.loads(raw)
        if now - float(record.get("at", 0)) <= HEARTBEAT_STALE_SECONDS:
            live[name.decode() if isinstance(name, bytes) else name] = record
        else:
            stale.append(name)
    if stale:
        client.hdel(key, *stale)
    return live


def queue_workers(queues: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Per queue: live workers consuming it, and tasks from it they hold (reserved or running)."""
    workers = dict.fromkeys(queues, 0)
    in_flight = dict.fromkeys(queues, 0)
    for record in live_workers().values():
        for queue in record.get("queues", []):
            if queue in workers:
                workers[queue] += 1
        for queue, n in record.get("in_flight", {}).items():
            if queue in in_flight:
                in_flight[queue] += int(n)
    return workers, in_flight
