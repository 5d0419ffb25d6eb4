"""API clients (tenants) and the tickets they submit."""

from __future__ import annotations

import hashlib
import secrets
import uuid

from django.db import models
from django.db.models import Q

from tickets.states import (  # noqa: F401 - re-exported: the states belong with the ticket
    IN_FLIGHT,
    SETTLED_STATUSES,
    TERMINAL,
    IllegalTransition,
    Status,
)


def hash_token(token: str) -> str:
    """Tokens are stored as SHA-256: they are long random strings, so no slow hash is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


class Client(models.Model):
    """A tenant of the API; every ticket belongs to one."""

    name = models.CharField(max_length=200, unique=True)
    token_hash = models.CharField(max_length=64, unique=True)
    token_prefix = models.CharField(max_length=12, help_text="First characters, to recognise a token.")
    webhook_secret = models.CharField(max_length=64, default=secrets.token_hex)
    callback_url = models.URLField(blank=True, default="", help_text="Default callback for tickets.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    # DRF treats the authenticated principal as `request.user`.
    is_authenticated = True
    is_anonymous = False

    def __str__(self) -> str:
        return self.name


class Priority(models.IntegerChoices):
    LOW = 0, "low"
    NORMAL = 1, "normal"
    HIGH = 2, "high"
    URGENT = 3, "urgent"


class Ticket(models.Model):
    """One customer request and where it stands in the pipeline."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="tickets")
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001 - NULL = no key; unique only when set
    request_hash = models.CharField(max_length=64, blank=True, default="")
    customer_ref = models.CharField(max_length=255, blank=True, default="")
    channel = models.CharField(max_length=32, default="api")
    subject = models.CharField(max_length=500, blank=True, default="")
    body = models.TextField()
    metadata = models.JSONField(default=dict, blank=True)
    priority = models.SmallIntegerField(choices=Priority.choices, default=Priority.NORMAL)
    callback_url = models.URLField(blank=True, default="")

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RECEIVED)
    # Attempts of the current stage; reset on every stage change, so a retry budget survives a
    # lost broker message (it is counted here, not in the message).
    stage_attempts = models.PositiveSmallIntegerField(default=0)
    intent = models.CharField(max_length=100, blank=True, default="")
    confidence = models.FloatField(null=True, blank=True)
    action = models.CharField(max_length=100, blank=True, default="")
    reply = models.TextField(blank=True, default="")
    # Each stage's persisted output ({"parse": {...}, "classify": {...}, ...}): the next hop is
    # chosen from this, so a ticket can be resumed or replayed from any stage.
    context = models.JSONField(default=dict, blank=True)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    # Set by the write that makes the ticket terminal, cleared once its callback is delivered (or
    # there is none, or it was given up on): the sweeper's list of callbacks that may be lost.
    callback_due_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["client", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="ticket_idempotency_key_unique_per_client",
            ),
        ]
        indexes = [
            models.Index(fields=["client", "-created_at"], name="ticket_client_created"),
            models.Index(fields=["client", "status", "-created_at"], name="ticket_client_status"),
            models.Index(fields=["client", "customer_ref", "-created_at"], name="ticket_customer"),
            # The sweeper's query: in-flight tickets by age.
            models.Index(
                fields=["updated_at"],
                condition=~Q(status__in=SETTLED_STATUSES),
                name="ticket_in_flight",
            ),
            # The callback sweep's query: only tickets whose callback is not settled yet.
            models.Index(
                fields=["callback_due_at"],
                condition=Q(callback_due_at__isnull=False),
                name="ticket_callback_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def effective_callback_url(self) -> str:
        return self.callback_url or self.client.callback_url
