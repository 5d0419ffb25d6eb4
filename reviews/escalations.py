"""What the pipeline asks of the review queue: open a review for a person, and close a dead letter's
review when the ticket is replayed. Handed to the agents when this app loads (reviews/apps.py,
agents/people.py): the agents, a layer below, never import it."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from reviews.models import Decision, Reason, Review, ReviewStatus
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


def review_close_for_replay(*, ticket: Ticket, stage: str) -> None:
    """The ticket is replayed from `stage`: its dead-letter review is no longer anyone's to decide."""
    Review.objects.filter(
        ticket=ticket, reason=Reason.DEAD_LETTER, status__in=[ReviewStatus.OPEN, ReviewStatus.CLAIMED]
    ).update(
        status=ReviewStatus.DISMISSED,
        decision=Decision.REPLAY,
        resolved_at=timezone.now(),
        notes=f"replayed from {stage}",
    )
