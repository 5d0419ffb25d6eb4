"""What a callback says, and the delivery key it goes under."""

from __future__ import annotations

from typing import Any

from tickets.models import Ticket


def callback_key(ticket: Ticket) -> str:
    """The delivery key of the ticket's current state change (the ledger's idempotency key, and the
    webhook's id): one per move into a terminal state — a replayed dead letter that dead-letters
    again, or a second `awaiting_review`, is a new state change with a callback of its own. A
    settled ticket's `updated_at` is the moment it entered that state (nothing else writes it)."""
    return f"{ticket.id}:callback:{ticket.status}:{int(ticket.updated_at.timestamp() * 1_000_000)}"


def callback_payload(ticket: Ticket) -> dict[str, Any]:
    """What the client is told: the ticket's outcome, not its trace."""
    return {
        "event": f"ticket.{ticket.status}",
        "ticket": {
            "id": str(ticket.id),
            "idempotency_key": ticket.idempotency_key,
            "customer_ref": ticket.customer_ref,
            "status": ticket.status,
            "intent": ticket.intent,
            "confidence": ticket.confidence,
            "action": ticket.action,
            "reply": ticket.reply,
            "resolved_at": ticket.resolved_at.isoformat() if ticket.resolved_at else None,
        },
    }
