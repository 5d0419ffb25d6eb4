"""What the pipeline tells optional observers (metrics, logs). Nothing in the product depends on a
receiver: the project's own apps call each other directly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import transaction
from django.dispatch import Signal

from agents.models import Trace
from agents.pipeline.spec import SPEC
from agents.stages.types import HUMAN, cheap_output
from tickets.models import Ticket

# Sent after every stage attempt is committed. kwargs: ticket_id, client_id, stage, attempt, outcome
# ("ok" | "retry" | "failed" | "escalated"), duration_ms, tier, model, confidence, input_tokens,
# output_tokens, cost_usd, cache_hit, new_status, created_at (the ticket's, for end-to-end latency),
# path ("core" | "llm" | "human", see settled_path).
stage_finished = Signal()


def settled_path(context: Mapping[str, Any]) -> str:
    """How a ticket got where it is: `human` (a reviewer decided), `llm` (a stage was handed over
    to Claude) or `core` (the cheap tiers alone) — read from the context just committed."""
    if HUMAN in context:
        return "human"
    return "llm" if any(cheap_output(name) in context for name in SPEC.names) else "core"


def announce(
    ticket: Ticket, trace: Trace, outcome: str, new_status: str, context: Mapping[str, Any] | None = None
) -> None:
    """Tell the observers of `trace` once the transaction that wrote it commits."""
    path = settled_path(ticket.context if context is None else context)

    def send() -> None:
        stage_finished.send(
            sender=Trace,
            ticket_id=str(ticket.pk),
            client_id=ticket.client_id,
            stage=trace.stage,
            attempt=trace.attempt,
            outcome=outcome,
            duration_ms=trace.duration_ms,
            tier=trace.tier,
            model=trace.model,
            confidence=trace.confidence,
            input_tokens=trace.input_tokens,
            output_tokens=trace.output_tokens,
            cost_usd=float(trace.cost_usd),
            cache_hit=trace.cache_hit,
            new_status=new_status,
            created_at=ticket.created_at,
            path=path,
        )

    transaction.on_commit(send)
