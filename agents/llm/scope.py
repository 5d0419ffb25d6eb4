"""Which ticket the Claude tier is working for (its client, priority, the cheap tiers' guess).

`ClassifierTier.classify(text, catalog)` is told only the text, but budgets, routing and batching
need the ticket. The pipeline's runner passes it in: it builds the scope from the ticket it loaded
(`StageContext.scope`) and binds it with `ticket_scope(...)` around the stage; tests and scripts
bind their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass


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


@contextlib.contextmanager
def ticket_scope(scope: TicketScope) -> Iterator[TicketScope]:
    """Bind `scope` for the calls made inside the block."""
    token = _bound.set(scope)
    try:
        yield scope
    finally:
        _bound.reset(token)


def current_scope() -> TicketScope:
    """The scope the caller bound (an empty one outside any ticket)."""
    return _bound.get() or TicketScope()
