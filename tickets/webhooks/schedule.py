"""When a callback is tried again, and when a drain runs: the retry schedule and the drain tasks.

The terminal write sets `Ticket.callback_due_at` in the same statement as the state (Postgres is
the outbox). After the commit, `callback_due` makes sure a drain runs within the batching window:
the first terminal ticket of a window sets a short-lived flag in Redis and schedules one drain; the
others of the window only find the flag. A callback due later (a retry, a busy or failing client)
asks `drain_later`, which schedules at most one drain for each second of the clock, however many
callbacks fall in it: a backlog never becomes a task per callback. A drain never scheduled (Redis
away) is the sweeper's to start.
"""

from __future__ import annotations

import logging
import math
import random
import time
from typing import Any

from celery import current_app
from django.conf import settings

from project.redisconn import redis_client

_log = logging.getLogger(__name__)

# The drain task's registered name: it predates the move to tickets, and messages already queued
# under it are consumed by this task (tickets/webhooks/tasks.py).
DRAIN_TASK = "agents.deliver_callbacks"
_DRAIN_FLAG = "callbacks:drain"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def cfg(name: str) -> Any:
    return settings.PIPELINE[name]


def seconds(spec: str) -> float:
    """'30s', '2m', '1h', '1d' or plain seconds."""
    spec = spec.strip().lower()
    return float(spec[:-1]) * _UNITS[spec[-1]] if spec[-1:] in _UNITS else float(spec)


def max_attempts() -> int:
    """Attempts before a callback is abandoned: CALLBACK_MAX_ATTEMPTS, else one more than the schedule."""
    return int(cfg("CALLBACK_MAX_ATTEMPTS")) or len(cfg("CALLBACK_RETRY_SCHEDULE")) + 1


def retry_delay(attempts: int) -> float:
    """How long after its `attempts`-th failure a callback is due again: the schedule's entry (the
    last one repeats), ±10 % so a client's backlog does not come back all at once."""
    schedule = cfg("CALLBACK_RETRY_SCHEDULE") or ["30s"]
    base = seconds(schedule[min(attempts, len(schedule)) - 1])
    return base * random.uniform(0.9, 1.1)


def callback_due() -> None:
    """After a terminal commit: a drain runs within `CALLBACK_BATCH_WINDOW_MS` (one Redis round trip
    for all but the first ticket of a window). Never raises: the sweeper covers a missed drain."""
    window = max(1, int(cfg("CALLBACK_BATCH_WINDOW_MS")))
    try:
        if redis_client().set(settings.BROKER_KEY_PREFIX + _DRAIN_FLAG, b"1", nx=True, px=window):
            drain_schedule(countdown=window / 1000)
    except Exception as exc:  # Redis or the broker away: the ticket's callback_due_at stays set
        _log.warning("callback drain not scheduled (the sweeper will send it): %s", exc)


def drain_schedule(countdown: float | None = None) -> None:
    """Start a drain (the sweeper, a resend, a replay by hand)."""
    current_app.send_task(DRAIN_TASK, countdown=countdown)


def drain_later(delay: float) -> None:
    """A drain about `delay` seconds from now: one per second of the clock, whoever asks. Never
    raises (the sweeper starts a drain for what stays due)."""
    at = math.ceil(time.time() + max(0.0, delay))
    try:
        key = f"{settings.BROKER_KEY_PREFIX}{_DRAIN_FLAG}:{at}"
        if redis_client().set(key, b"1", nx=True, px=int((delay + 60) * 1000)):
            drain_schedule(countdown=max(0.0, at - time.time()))
    except Exception as exc:
        _log.warning("callback drain not scheduled (the sweeper will send it): %s", exc)
