"""Review services: opening reviews from escalations."""

from __future__ import annotations

from typing import Any

from reviews.models import Reason, Review, ReviewStatus
from tickets.models import Ticket


def review_create_from_escalation(*, ticket: Ticket, reason: str, suggestion: dict[str, Any]) -> Review:
    """Open a review for an escalated ticket (idempotent: one live review per ticket)."""
    live = Review.objects.filter(ticket=ticket, status__in=[ReviewStatus.OPEN, ReviewStatus.CLAIMED])
    existing = live.first()
    if existing is not None:
        return existing
    return Review.objects.create(
        ticket=ticket,
        reason=reason if reason in Reason.values else Reason.STAGE_FAILED,
        detail=str(suggestion.get("detail", ""))[:2000],
        suggested_intent=suggestion.get("intent") or "",
        suggested_plan=suggestion.get("plan") or [],
        suggested_reply=suggestion.get("reply") or "",
        suggested_confidence=suggestion.get("confidence"),
        suggested_tier=suggestion.get("tier") or "",
    )
