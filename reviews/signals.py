"""Close the dead-letter review when its ticket is replayed."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver
from django.utils import timezone

from agents.pipeline import ticket_replayed
from reviews.models import Decision, Reason, Review, ReviewStatus


@receiver(ticket_replayed)
def close_dead_letter_review(sender: Any, ticket: Any, stage: str, **kwargs: Any) -> None:
    Review.objects.filter(
        ticket=ticket, reason=Reason.DEAD_LETTER, status__in=[ReviewStatus.OPEN, ReviewStatus.CLAIMED]
    ).update(
        status=ReviewStatus.DISMISSED,
        decision=Decision.REPLAY,
        resolved_at=timezone.now(),
        notes=f"replayed from {stage}",
    )
