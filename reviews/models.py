"""The review queue: what the agents were unsure of, and what people decided."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from tickets.models import Ticket


class Reason(models.TextChoices):
    LOW_CONFIDENCE = "low_confidence", "low confidence"
    STAGE_FAILED = "stage_failed", "stage failed"
    DEAD_LETTER = "dead_letter", "dead letter"
    POLICY = "policy", "intent always reviewed by policy"
    CUSTOMER_ASKED = "customer_asked", "customer asked for a person"


class ReviewStatus(models.TextChoices):
    OPEN = "open"
    CLAIMED = "claimed"
    RESOLVED = "resolved"
    DISMISSED = "dismissed"


LIVE = (ReviewStatus.OPEN, ReviewStatus.CLAIMED)


class Decision(models.TextChoices):
    APPROVE = "approve", "approve the suggestion"
    CORRECT = "correct", "correct the intent and/or reply"
    DISMISS = "dismiss", "dismiss with a reason"
    REPLAY = "replay", "replay the dead letter"


class Review(models.Model):
    """A ticket waiting for a person, with the agents' suggestion."""

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="reviews")
    reason = models.CharField(max_length=20, choices=Reason.choices)
    detail = models.TextField(blank=True, default="")
    suggested_intent = models.CharField(max_length=100, blank=True, default="")
    suggested_plan = models.JSONField(default=list, blank=True)
    suggested_reply = models.TextField(blank=True, default="")
    suggested_confidence = models.FloatField(null=True, blank=True)
    suggested_tier = models.CharField(max_length=32, blank=True, default="")
    status = models.CharField(max_length=10, choices=ReviewStatus.choices, default=ReviewStatus.OPEN)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    decision = models.CharField(max_length=10, choices=Decision.choices, blank=True, default="")
    final_intent = models.CharField(max_length=100, blank=True, default="")
    final_reply = models.TextField(blank=True, default="")
    dismiss_reason = models.CharField(max_length=500, blank=True, default="")
    notes = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-ticket__priority", "created_at"]
        constraints = [
            # One live review per ticket: a redelivered escalation cannot open a second one.
            models.UniqueConstraint(
                fields=["ticket"],
                condition=Q(status__in=["open", "claimed"]),
                name="review_one_live_per_ticket",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "created_at"], name="review_status_created"),
            models.Index(fields=["assignee", "status"], name="review_assignee_status"),
        ]

    def __str__(self) -> str:
        return f"Review of {self.ticket_id} ({self.reason}, {self.status})"

    @property
    def is_live(self) -> bool:
        return self.status in LIVE


class Feedback(models.Model):
    """One human decision, kept as training data: the text, what the agents said, what the person did.

    Rows stand alone (text and intents are copied) so they outlive archived tickets and reviews.
    """

    review = models.OneToOneField(Review, null=True, blank=True, on_delete=models.SET_NULL, related_name="feedback")
    ticket = models.ForeignKey(Ticket, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    text = models.TextField()
    reason = models.CharField(max_length=20, choices=Reason.choices)
    agent_intent = models.CharField(max_length=100, blank=True, default="")
    agent_confidence = models.FloatField(null=True, blank=True)
    agent_tier = models.CharField(max_length=32, blank=True, default="")
    agent_reply = models.TextField(blank=True, default="")
    human_intent = models.CharField(max_length=100, blank=True, default="")
    human_reply = models.TextField(blank=True, default="")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    # approve/correct only: the person changed the intent or the reply the agents suggested.
    overridden = models.BooleanField(default=False)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    seconds_taken = models.FloatField(null=True, blank=True, help_text="From claim to decision.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "feedback"
        indexes = [models.Index(fields=["agent_intent", "decision"], name="feedback_intent_decision")]

    def __str__(self) -> str:
        return f"{self.decision}: {self.agent_intent or '-'} -> {self.human_intent or '-'}"
