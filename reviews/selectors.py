"""Review selectors: the queue, what a reviewer needs to see on a review, and the feedback table."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.db.models import Count, F, Min, Q, QuerySet

from agents.models import Intent, Trace
from agents.pipeline.context import ticket_input
from agents.stages.decide import render_reply
from reviews.models import LIVE, Decision, Feedback, Review, ReviewStatus
from tickets.models import Ticket

HISTORY_SIZE = 8


def review_queue(*, statuses: tuple[str, ...] = LIVE) -> QuerySet[Review]:
    """Reviews to work, most urgent ticket first, then oldest."""
    return (
        Review.objects.filter(status__in=statuses)
        .select_related("ticket", "ticket__client", "assignee")
        .order_by("-ticket__priority", "created_at")
    )


def review_queue_stats(*, user: Any = None) -> dict[str, Any]:
    """Counts of open and claimed reviews (and the user's), and when the oldest open one arrived."""
    stats = Review.objects.filter(status__in=LIVE).aggregate(
        open=Count("pk", filter=Q(status=ReviewStatus.OPEN)),
        claimed=Count("pk", filter=Q(status=ReviewStatus.CLAIMED)),
        mine=Count("pk", filter=Q(status=ReviewStatus.CLAIMED, assignee_id=getattr(user, "pk", None))),
        oldest_open=Min("created_at", filter=Q(status=ReviewStatus.OPEN)),
    )
    return stats


def review_intents() -> list[str]:
    """Suggested intents present in the live queue, for the intent filter."""
    rows = (
        Review.objects.filter(status__in=LIVE).exclude(suggested_intent="").values_list("suggested_intent", flat=True)
    )
    return sorted(set(rows))


def intent_choices() -> list[str]:
    """Active intents a reviewer may choose."""
    return list(Intent.objects.filter(is_active=True).order_by("name").values_list("name", flat=True))


def reply_drafts(*, ticket: Ticket) -> dict[str, str]:
    """Each active intent's reply template filled in for this ticket, to start the reviewer's reply from."""
    view = ticket_input(ticket)
    return {
        intent.name: render_reply(intent.reply_template, view)
        for intent in Intent.objects.filter(is_active=True).only("name", "reply_template", "allowed_actions")
        if "reply" in intent.allowed_actions
    }


def customer_history(*, ticket: Ticket, limit: int = HISTORY_SIZE) -> QuerySet[Ticket]:
    """The same customer's other tickets at the same client, newest first."""
    if not ticket.customer_ref:
        return Ticket.objects.none()
    return (
        Ticket.objects.filter(client_id=ticket.client_id, customer_ref=ticket.customer_ref)
        .exclude(pk=ticket.pk)
        .order_by("-created_at")
        .only("id", "created_at", "status", "intent", "action", "subject", "body", "reply")[:limit]
    )


def trace_timeline(*, ticket: Ticket) -> QuerySet[Trace]:
    """Every stage attempt of the ticket, in the order they ran."""
    return ticket.traces.order_by("started_at")


def feedback_since(*, since: datetime | None = None) -> QuerySet[Feedback]:
    """Feedback rows created at or after `since` (all when None), oldest first: the retraining input."""
    rows = Feedback.objects.all()
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    return rows.order_by("created_at", "pk")


def override_rates() -> list[dict[str, Any]]:
    """Per agents' intent: approve/correct decisions, how many a person overrode, and the rate."""
    rows = (
        Feedback.objects.filter(decision__in=[Decision.APPROVE, Decision.CORRECT])
        .values("agent_intent")
        .annotate(decisions=Count("pk"), overrides=Count("pk", filter=Q(overridden=True)))
        .order_by("agent_intent")
    )
    return [
        {
            "intent": r["agent_intent"],
            "decisions": r["decisions"],
            "overrides": r["overrides"],
            "rate": r["overrides"] / r["decisions"],
        }
        for r in rows
    ]


def decision_confidences() -> Iterator[dict[str, Any]]:
    """Per approve/correct decision: the agents' intent, confidence and model, and whether the person chose another intent.

    `model` is what classified the ticket (`local:<version>`, `rules`, ...), or None once the ticket is archived.
    """
    rows = (
        Feedback.objects.filter(decision__in=[Decision.APPROVE, Decision.CORRECT], agent_confidence__isnull=False)
        .exclude(agent_intent="")
        .values_list("agent_intent", "agent_confidence", "human_intent", "ticket__context__classify__model")
        .iterator()
    )
    return ({"intent": i, "confidence": c, "wrong": bool(h) and h != i, "model": m} for i, c, h, m in rows)


def feedback_training_rows() -> Iterator[dict[str, Any]]:
    """Text and the person's intent for every approve/correct decision: the local model's training data."""
    return (
        Feedback.objects.filter(decision__in=[Decision.APPROVE, Decision.CORRECT])
        .exclude(human_intent="")
        .values("text", intent=F("human_intent"))
        .iterator()
    )
