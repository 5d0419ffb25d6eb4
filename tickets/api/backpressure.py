"""Backpressure: refuse new work while the queues hold more than a bound — only from the clients
whose lane is full, unless the queues every client shares are (docs/reliability.md, "Lanes")."""

from __future__ import annotations

import threading
import time

from django.conf import settings

from agents.pipeline.spec import LLM_QUEUE, QUEUES, lane_of, lane_queues

CHECK_EVERY_SECONDS = 1.0

_lock = threading.Lock()
_state: dict[str, object] = {"checked": float("-inf"), "depths": {}}


def stage_queues() -> tuple[str, ...]:
    """The first stage's lanes, the other stage queues and the llm queue (from the stage spec)."""
    return (*lane_queues(QUEUES[0]), *QUEUES[1:], LLM_QUEUE)


def queue_depths() -> dict[str, int]:
    """Messages waiting in each stage queue, asked of the broker (Redis or RabbitMQ alike)."""
    from project.metrics import queue_depths as broker_depths

    depths, _unacked = broker_depths(stage_queues())
    return dict(depths)


def queued_messages() -> int:
    """Messages waiting in all the stage queues."""
    return sum(_depths().values())


def _depths() -> dict[str, int]:
    """The depths, asked of the broker at most once a second per process."""
    now = time.monotonic()
    with _lock:
        if now - float(_state["checked"]) >= CHECK_EVERY_SECONDS:  # type: ignore[arg-type]
            _state["depths"] = queue_depths()
            _state["checked"] = now
        return dict(_state["depths"])  # type: ignore[arg-type]


def overloaded(client_id: int | None = None) -> bool:
    """Whether to refuse this client's new work: the queues all clients share (past the first hop)
    hold more than BACKPRESSURE_MAX_QUEUED, or its own lane more than its share of it. A flood fills
    its client's lane and is refused there; the other lanes still admit."""
    depths = _depths()
    lanes = set(lane_queues(QUEUES[0]))
    bound = settings.BACKPRESSURE_MAX_QUEUED
    shared = sum(n for queue, n in depths.items() if queue not in lanes)
    if shared > bound:
        return True
    if client_id is None:
        return sum(depths.values()) > bound
    return depths.get(lane_of(QUEUES[0], client_id), 0) > max(1, bound // len(lanes))


def reset() -> None:
    """Forget the cached depths (tests)."""
    with _lock:
        _state["checked"] = float("-inf")
