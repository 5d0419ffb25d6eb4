"""API clients (tenants) and the tickets they submit."""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from tickets.states import (  # noqa: F401 - re-exported: the states belong with the ticket
    SETTLED_STATUSES,
    TERMINAL,
    IllegalTransition,
    Status,
)


def hash_token(token: str) -> str:
    """API keys are stored as SHA-256: they are long random strings, so no slow hash is needed (a
    slow one would cost every request its CPU), and one indexed read finds the key."""
    return hashlib.sha256(token.encode()).hexdigest()


WEBHOOK_SECRET_PREFIX = "whsec_"


def webhook_secret_new() -> str:
    """A Standard Webhooks signing secret: `whsec_` and 32 random bytes in base64."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


class Client(models.Model):
    """A tenant of the API; every ticket belongs to one. It authenticates with its API keys."""

    name = models.CharField(max_length=200, unique=True)
    webhook_secret = models.CharField(max_length=128, unique=True, default=webhook_secret_new)
    # After a rotation the previous secret signs too (a second signature) until this time.
    webhook_secret_previous = models.CharField(max_length=128, blank=True, default="")
    webhook_secret_previous_until = models.DateTimeField(null=True, blank=True)
    callback_url = models.URLField(blank=True, default="", help_text="Default callback for tickets.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    # DRF treats the authenticated principal as `request.user`.
    is_authenticated = True
    is_anonymous = False

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    """A named bearer key of a client: shown once, stored as its SHA-256, recognised by its prefix.

    Not djangorestframework-api-key's model: its keys are `<prefix>.<secret>`, found by prefix and
    checked with a hasher through the ORM (and tokens issued before keys existed would not fit);
    here the whole key's SHA-256 is the lookup, one indexed read the auth check already made.
    """

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="The key's first characters, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Refused from this time on.")
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, help_text="To the minute.")

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_usable(self) -> bool:
        now = timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


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

    # Status's own states, or a stage's status from the spec (agents/pipeline/spec.py): not DB choices,
    # so a new stage needs no migration.
    status = models.CharField(max_length=20, default=Status.RECEIVED)
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


class DeliveryStatus(models.TextChoices):
    STARTED = "started"
    DONE = "done"
    FAILED = "failed"


class CallbackDelivery(models.Model):
    """The callback ledger: one row per delivery key (a ticket's move into a terminal state).

    A drain that finds its key done settles the ticket without a second POST; a failed one counts
    its attempts here until the retry schedule gives up (tickets/webhooks/)."""

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="callback_deliveries")
    idempotency_key = models.CharField(max_length=255, unique=True)
    url = models.TextField(blank=True, default="")
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.STARTED)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        verbose_name_plural = "callback deliveries"

    def __str__(self) -> str:
        return f"callback {self.idempotency_key} ({self.status})"
