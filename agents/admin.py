from __future__ import annotations

from django.contrib import admin

from agents.models import DeadLetter, Intent, SideEffect, Trace


@admin.register(Intent)
class IntentAdmin(admin.ModelAdmin):
    list_display = ["name", "threshold", "risk", "always_review", "allowed_actions", "is_active", "updated_at"]
    list_filter = ["risk", "always_review", "is_active"]
    search_fields = ["name", "description"]


@admin.register(Trace)
class TraceAdmin(admin.ModelAdmin):
    list_display = ["ticket", "stage", "attempt", "status", "tier", "confidence", "duration_ms", "started_at"]
    list_filter = ["stage", "status", "tier"]
    raw_id_fields = ["ticket"]


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ["ticket", "stage", "reason", "attempts", "created_at", "replayed_at"]
    list_filter = ["stage"]
    raw_id_fields = ["ticket"]


@admin.register(SideEffect)
class SideEffectAdmin(admin.ModelAdmin):
    list_display = ["idempotency_key", "tool", "status", "attempts", "created_at", "finished_at"]
    list_filter = ["tool", "status"]
    raw_id_fields = ["ticket"]
