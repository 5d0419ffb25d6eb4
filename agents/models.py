"""Intents (data, not code), per-stage traces, dead letters and the side-effect ledger."""

from __future__ import annotations

from django.db import models

from tickets.models import Ticket


class Risk(models.TextChoices):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Intent(models.Model):
    """One intent of the pack: how to recognise it and what the agents may do about it."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True, default="")
    examples = models.JSONField(default=list, blank=True)
    rules = models.JSONField(default=list, blank=True, help_text="Case-insensitive regexes.")
    threshold = models.FloatField(default=0.9)
    risk = models.CharField(max_length=10, choices=Risk.choices, default=Risk.LOW)
    always_review = models.BooleanField(default=False)
    allowed_actions = models.JSONField(default=list, blank=True)
    reply_template = models.TextField(blank=True, default="")
    webhook_url = models.URLField(blank=True, default="", help_text="Downstream API for `webhook`.")
    is_active = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TraceStatus(models.TextChoices):
    OK = "ok"
    RETRY = "retry"  # a transient failure; the stage will run again
    FAILED = "failed"  # permanent, or out of attempts


class Trace(models.Model):
    """One stage attempt, written in the same transaction as the ticket's state change."""

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="traces")
    stage = models.CharField(max_length=16)  # a stage of the spec (agents/pipeline/spec.py), or REVIEW
    attempt = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=10, choices=TraceStatus.choices)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    duration_ms = models.FloatField()
    confidence = models.FloatField(null=True, blank=True)
    tier = models.CharField(max_length=32, blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    cache_hit = models.BooleanField(default=False)
    error_class = models.CharField(max_length=200, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    output = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["started_at", "id"]
        indexes = [
            models.Index(fields=["ticket", "started_at"], name="trace_ticket_started"),
            models.Index(fields=["started_at"], name="trace_started"),
        ]

    def __str__(self) -> str:
        return f"{self.ticket_id} {self.stage}#{self.attempt} {self.status}"


class DeadLetter(models.Model):
    """A ticket whose stage failed for good: the reason, the last error, and its replay."""

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="dead_letters")
    stage = models.CharField(max_length=16)  # the stage of the spec that failed
    reason = models.CharField(max_length=200)
    error_class = models.CharField(max_length=200, blank=True, default="")
    last_error = models.TextField(blank=True, default="")
    attempts = models.PositiveSmallIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    replayed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.ticket_id} at {self.stage}: {self.reason}"


class LedgerStatus(models.TextChoices):
    STARTED = "started"
    DONE = "done"
    FAILED = "failed"


class SideEffect(models.Model):
    """The execution ledger: one row per side effect, unique by its idempotency key.

    A redelivered execute stage finds its row and returns the recorded result instead of
    sending a second reply or making a second downstream call.
    """

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="side_effects")
    idempotency_key = models.CharField(max_length=255, unique=True)
    tool = models.CharField(max_length=32)
    arguments = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=LedgerStatus.choices, default=LedgerStatus.STARTED)
    attempts = models.PositiveSmallIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.tool} {self.idempotency_key} ({self.status})"


class ModelVersion(models.Model):
    """A trained local intent model: its bytes, what it was trained on, how it measured."""

    version = models.CharField(max_length=40, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    n_examples = models.PositiveIntegerField()
    n_feedback = models.PositiveIntegerField(default=0, help_text="Reviewer decisions among the examples.")
    metrics = models.JSONField(default=dict, blank=True, help_text="Cross-validated metrics at training.")
    holdout_metrics = models.JSONField(
        default=dict, blank=True, help_text="Candidate vs active on the held-back slice."
    )
    blob = models.BinaryField()
    is_active = models.BooleanField(default=False)
    activated_at = models.DateTimeField(null=True, blank=True)
    notes = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=models.Q(is_active=True), name="one_active_model"),
        ]

    def __str__(self) -> str:
        return f"{self.version}{' (active)' if self.is_active else ''}"


class ThresholdChange(models.Model):
    """Every change of an intent's automation threshold, with its reason."""

    intent = models.CharField(max_length=100, db_index=True)
    old = models.FloatField(null=True)
    new = models.FloatField()
    reason = models.TextField()
    model_version = models.CharField(max_length=40, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.intent}: {self.old} → {self.new}"
