"""Ticket selectors: what a client may read, and nothing of another client's."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.db.models import QuerySet

from tickets.models import Client, Ticket

TRACE_FIELDS = (
    "stage",
    "attempt",
    "status",
    "started_at",
    "finished_at",
    "duration_ms",
    "confidence",
    "tier",
    "model",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "cache_hit",
    "error_class",
    "error_message",
    "output",
)


def ticket_list(
    *,
    client: Client,
    status: str | None = None,
    intent: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> QuerySet[Ticket]:
    """The client's tickets, newest first, filtered."""
    qs = Ticket.objects.filter(client=client)
    if status:
        qs = qs.filter(status=status)
    if intent:
        qs = qs.filter(intent=intent)
    if created_after:
        qs = qs.filter(created_at__gte=created_after)
    if created_before:
        qs = qs.filter(created_at__lt=created_before)
    return qs


def ticket_get(*, client: Client, ticket_id: Any) -> Ticket | None:
    """One of the client's tickets, or None (another client's ticket is not found, not forbidden)."""
    try:
        ticket_uuid = uuid.UUID(str(ticket_id))
    except ValueError:
        return None
    return Ticket.objects.filter(client=client, pk=ticket_uuid).first()


def ticket_trace(*, ticket: Ticket) -> list[dict[str, Any]]:
    """The ticket's stage attempts in order (through the reverse relation: tickets does not import agents)."""
    return list(ticket.traces.order_by("started_at", "id").values(*TRACE_FIELDS))
