"""Backpressure: refuse new work while the stage queues hold more than a bound."""

from __future__ import annotations

import threading
import time

from django.conf import settings

STAGE_QUEUES = ("parse", "classify", "decide", "execute", "escalate", "llm")
CHECK_EVERY_SECONDS = 1.0

_lock = threading.Lock()
_state = {"checked": float("-inf"), "queued": 0}


def queued_messages() -> int:
    """Messages waiting in the stage queues, asked of the broker (Redis or RabbitMQ alike)."""
    from project.metrics import queue_depths

    depths, _unacked = queue_depths(STAGE_QUEUES)
    return sum(depths.values())


def overloaded() -> bool:
    """Whether the queues are past the bound; the broker is asked at most once a second per process."""
    now = time.monotonic()
    with _lock:
        if now - _state["checked"] >= CHECK_EVERY_SECONDS:
            _state["queued"] = queued_messages()
            _state["checked"] = now
        return _state["queued"] > settings.BACKPRESSURE_MAX_QUEUED


def reset() -> None:
    """Forget the cached depth (tests)."""
    with _lock:
        _state["checked"] = float("-inf")
