"""Workers' heartbeats. A worker has no HTTP port. `WorkerHeartbeat`, a consumer bootstep, touches
`WORKER_HEARTBEAT_FILE` every few seconds while the consumer holds a live broker connection (the
liveness probe checks the file's age: `deploy/worker-alive`), and records in Redis which queues this
worker consumes and how many of their tasks it holds (reserved or running). The API's metrics read that
record (`live_workers`): `pipeline_queue_workers` (an alert fires for a queue no live worker serves) and
`pipeline_queue_in_flight` (queued plus in flight is the work in the system, on which KEDA scales).

The record also lists the hops the worker holds (`hops`: each task's name, its arguments — the ticket
and, for a Claude hop, the stage — and its ETA when it is a retry waiting in the worker). A worker
silent for `HEARTBEAT_STALE_SECONDS` (killed, frozen, cut off) is the sweeper's: `silent_workers` lists
it, `silent_claim` takes its record away (compare-and-delete, so one recoverer wins), and
`agents.pipeline.sweeper.workers_sweep_silent` re-dispatches its hops through the conditional writes.
A worker started again under the same node name first moves its predecessor's record aside
(`ORPHANS_KEY`), so its own heartbeat does not overwrite the hops of the one that died.

The Celery app loads this module, so it imports nothing of the project's at load time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from celery import bootsteps
from kombu.transport.native_delayed_delivery import _delay_prefix_re as _DELAY_BITS

log = logging.getLogger(__name__)

# Every second: a silent worker's hops are re-dispatched within seconds (docs/reliability.md).
HEARTBEAT_SECONDS = float(os.environ.get("WORKER_HEARTBEAT_SECONDS", 1))
# A worker whose record is older than this is counted gone (three missed heartbeats, and 2 s).
HEARTBEAT_STALE_SECONDS = 3 * HEARTBEAT_SECONDS + 2
REGISTRY_KEY = "pipeline:workers"
ORPHANS_KEY = "pipeline:workers:orphans"  # records of workers started again under the same name
# Queues whose consumer went silent, for a while: a message the broker had already pushed into a
# frozen worker's socket (Redis's BRPOP, RabbitMQ's prefetch) is in no heartbeat and no queue.
QUIET_KEY = "pipeline:workers:quiet"
QUIET_WINDOW_SECONDS = 20.0
BOOT = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # this process's start: tells a restart from itself
# Delete a field only if it still holds what the caller read (a worker that woke up wrote anew).
_CLAIM = (
    "if redis.call('hget', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('hdel', KEYS[1], ARGV[1]) end return 0"
)


def heartbeat_file() -> Path:
    return Path(os.environ.get("WORKER_HEARTBEAT_FILE", "/tmp/celery-worker-alive"))


def _redis() -> Any:
    from project.redisconn import redis_client

    return redis_client()


def _registry_key(name: str = REGISTRY_KEY) -> str:
    from django.conf import settings

    return settings.BROKER_KEY_PREFIX + name


def in_flight_by_queue() -> dict[str, int]:
    """Tasks this worker holds (reserved or running), by the queue they came from."""
    from celery.worker import state

    return dict(Counter(_queue_of(r.delivery_info or {}) for r in list(state.reserved_requests)))


def held_hops() -> list[list[Any]]:
    """The tasks this worker holds — running, reserved, or a retry waiting for its ETA — as
    [task name, its first two arguments, ETA or None]: what a recoverer needs to dispatch them again."""
    from celery.worker import state

    hops, seen = [], set()
    for waiting, requests in ((False, state.reserved_requests), (True, state.scheduled_requests)):
        for request in list(requests):
            if request.id in seen:
                continue
            seen.add(request.id)
            with contextlib.suppress(Exception):  # a request whose body cannot be read holds no hop
                hops.append([request.name, list(request.args or ())[:2], _iso(request.eta) if waiting else None])
    return hops


def _iso(eta: Any) -> str | None:
    """A retry's ETA as the sweeper reads it (ISO 8601): Celery gives a string or a datetime."""
    if eta is None or isinstance(eta, str):
        return eta
    return eta.isoformat()


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
        try:
            adopt_predecessor(parent.hostname)
        except Exception:
            log.warning("could not read this node's previous heartbeat record", exc_info=True)
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
        record = {
            "at": time.time(),
            "queues": queues,
            "in_flight": in_flight_by_queue(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "boot": BOOT,
            "hops": held_hops(),
        }
        try:
            _redis().hset(_registry_key(), parent.hostname, json.dumps(record))
        except Exception:
            log.warning("could not record this worker's heartbeat in Redis", exc_info=True)


def adopt_predecessor(name: str) -> None:
    """A worker started under the name of one that died (a supervisor's restart) moves the dead
    one's record aside for the sweeper before its own first heartbeat replaces it: its hops, and its
    queues (a message it took after its last heartbeat is in neither)."""
    client, key = _redis(), _registry_key()
    raw = client.hget(key, name)
    if raw is None:
        return
    record = json.loads(raw)
    if record.get("boot") != BOOT:
        client.hset(_registry_key(ORPHANS_KEY), f"{text(name)}#{record.get('boot')}", raw)


def live_workers(now: float | None = None) -> dict[str, dict[str, Any]]:
    """Workers whose last heartbeat is recent, by node name. A stale record leaves the registry for
    the orphans' hash, where the sweeper finds it (`silent_workers`, `silent_claim`)."""
    now = time.time() if now is None else now
    client, key = _redis(), _registry_key()
    live, stale = {}, []
    for name, raw in client.hgetall(key).items():
        record = json.loads(raw)
        if now - float(record.get("at", 0)) <= HEARTBEAT_STALE_SECONDS:
            live[name.decode() if isinstance(name, bytes) else name] = record
        else:
            stale.append((name, raw, record))
    for name, raw, record in stale:
        client.hset(_registry_key(ORPHANS_KEY), f"{text(name)}#{record.get('boot')}", raw)
        silent_claim(key, name, raw)
    return live


def text(name: bytes | str) -> str:
    return name.decode() if isinstance(name, bytes) else name


def silent_workers(now: float | None = None) -> list[tuple[str, bytes, bytes, dict[str, Any]]]:
    """Workers gone silent while holding hops, and records set aside by a restart under the same
    name: (the hash, the field, the record as stored, the record) for `silent_claim`."""
    now = time.time() if now is None else now
    client, out = _redis(), []
    for key in (_registry_key(), _registry_key(ORPHANS_KEY)):
        for name, raw in client.hgetall(key).items():
            record = json.loads(raw)
            if key != _registry_key() or now - float(record.get("at", 0)) > HEARTBEAT_STALE_SECONDS:
                out.append((key, name, raw, record))
    return out


def silent_claim(key: str, name: bytes, raw: bytes) -> bool:
    """Take a silent worker's record away if it is still the one read: True for one caller only,
    and False when the worker woke up and wrote a new one meanwhile."""
    return bool(_redis().eval(_CLAIM, 1, key, name, raw))


def quiet_mark(name: str, queues: list[str], since: float, now: float | None = None) -> None:
    """Remember, for QUIET_WINDOW_SECONDS, that `queues` lost a consumer that was last heard at `since`."""
    now = time.time() if now is None else now
    record = {"queues": queues, "since": since, "until": now + QUIET_WINDOW_SECONDS}
    _redis().hset(_registry_key(QUIET_KEY), name, json.dumps(record))


def quiet_queues(now: float | None = None) -> list[dict[str, Any]]:
    """The marks of `quiet_mark` still in their window (expired ones are removed)."""
    now = time.time() if now is None else now
    client, key, out, expired = _redis(), _registry_key(QUIET_KEY), [], []
    for name, raw in client.hgetall(key).items():
        record = json.loads(raw)
        if now <= float(record["until"]):
            out.append(record)
        else:
            expired.append(name)
    if expired:
        client.hdel(key, *expired)
    return out


def held_by_live_workers(now: float | None = None) -> set[str]:
    """Tickets a live worker holds (its hops' first argument)."""
    return {str(hop[1][0]) for record in live_workers(now).values() for hop in record.get("hops", []) if hop[1]}


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
