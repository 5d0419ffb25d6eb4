"""Which ticket the Claude tier is working for (its client, priority, the cheap tiers' guess).

`ClassifierTier.classify(text, catalog)` is told only the text, but budgets, routing and batching
need the ticket. Inside the `agents.llm_stage` task the tier reads it from Celery's current
request (a ticket id; the row is loaded once per task run); elsewhere (tests, scripts, drafting)
a caller binds it with `ticket_scope(...)`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from celery import current_task

LLM_TASK = "agents.llm_stage"


@dataclass(frozen=True)
class TicketScope:
    """What the tier may know about the ticket it classifies."""

    ticket_id: str = ""
    client_id: int | None = None
    client_name: str = ""
    priority: int = 1
    attempt: int = 1
    prior_intent: str = ""
    prior_confidence: float | None = None


_bound: ContextVar[TicketScope | None] = ContextVar("llm_ticket_scope", default=None)
_task_cache = threading.local()


@contextlib.contextmanager
def ticket_scope(scope: TicketScope) -> Iterator[TicketScope]:
    """Bind `scope` for the calls made inside the block."""
    token = _bound.set(scope)
    try:
        yield scope
    finally:
        _bound.reset(token)


def scope_for_ticket(ticket_id: str) -> TicketScope | None:
    """The scope of a ticket, from Postgres."""
    from tickets.models import Ticket  # the tier module is imported before Django apps are ready

    row = (
        Ticket.objects.filter(pk=ticket_id)
        .values("client_id", "client__name", "priority", "stage_attempts", "context")
        .first()
    )
    if row is None:
        return None
    prior = (row["context"] or {}).get("classify_cpu") or {}
    return TicketScope(
        ticket_id=str(ticket_id),
        client_id=row["client_id"],
        client_name=row["client__name"],
        priority=row["priority"],
        attempt=row["stage_attempts"] + 1,
        prior_intent=prior.get("intent") or "",
        prior_confidence=prior.get("confidence") if prior.get("intent") else None,
    )


def current_scope() -> TicketScope:
    """The bound scope, or the one of the ticket the running `agents.llm_stage` task works on."""
    bound = _bound.get()
    if bound is not None:
        return bound
    task = current_task
    if not task or task.name != LLM_TASK or not task.request.args:
        return TicketScope()
    run = (task.request.id, task.request.retries)
    if getattr(_task_cache, "run", None) != run:
        _task_cache.scope = scope_for_ticket(str(task.request.args[0])) or TicketScope()
        _task_cache.run = run
    return _task_cache.scope
