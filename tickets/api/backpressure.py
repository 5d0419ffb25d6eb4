"""Backpressure: refuse a tenant's new work past its share of the work in flight (429, its own
refusal: another tenant is never refused because of it), and everyone's while the queues every
tenant shares hold more than a bound (503) (docs/reliability.md, "One tenant cannot stall the others")."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from django.conf import settings

from agents.pipeline import tenants
from agents.pipeline.spec import LLM_QUEUE, QUEUES, lane_queues

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


@dataclass(frozen=True)
class Refusal:
    status: int
    detail: str


def overloaded() -> bool:
    """Whether the queues all tenants share (past the first hop's lanes) hold more than
    BACKPRESSURE_MAX_QUEUED: then everyone's new work waits."""
    lanes = set(lane_queues(QUEUES[0]))
    return sum(n for queue, n in _depths().items() if queue not in lanes) > settings.BACKPRESSURE_MAX_QUEUED


def admit(client_id: int) -> Refusal | None:
    """Admit (and count) a new ticket of the client, or say why not: 503 while the shared queues are
    full, 429 while the client holds its share of the work in flight. One Redis round trip."""
    if overloaded():
        return Refusal(503, "too much work queued; retry later")
    admission = tenants.admit(client_id)
    if not admission.admitted:
        return Refusal(
            429, f"{admission.in_flight} of your requests are in flight, your share is {admission.share}; retry later"
        )
    return None


def reset() -> None:
    """Forget the cached depths (tests)."""
    with _lock:
        _state["checked"] = float("-inf")
