"""Feedback: every decision, read-only, with the per-intent override rates above the list."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from reviews.models import Feedback
from reviews.selectors import override_rates


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "decision",
        "agent_intent",
        "human_intent",
        "overridden",
        "agent_confidence",
        "agent_tier",
        "reviewer",
        "seconds_taken",
    ]
    list_filter = ["decision", "overridden", "agent_intent", "reason"]
    search_fields = ["text", "human_reply"]
    date_hierarchy = "created_at"
    raw_id_fields = ["review", "ticket", "reviewer"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Feedback | None = None) -> bool:
        return False  # training data: what happened, not to be edited

    def has_delete_permission(self, request: HttpRequest, obj: Feedback | None = None) -> bool:
        return request.user.is_superuser

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().changelist_view(request, {"override_rates": override_rates(), **(extra_context or {})})
