from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from agents.callbacks import callback_resend
from agents.intents.safe_regex import RuleError, validate_rule
from agents.models import DeadLetter, Intent, LedgerStatus, SideEffect, Trace


class IntentForm(forms.ModelForm):
    """A rule the rules tier cannot run in linear time (RE2) is a form error, never saved."""

    class Meta:
        model = Intent
        fields = "__all__"  # noqa: DJ007 - the admin shows every field of an intent

    def clean_rules(self) -> Any:
        rules = self.cleaned_data.get("rules")
        if rules in (None, ""):
            return []
        if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
            raise forms.ValidationError("rules are a JSON list of strings")
        errors = []
        for rule in rules:
            try:
                validate_rule(rule)
            except RuleError as exc:
                errors.append(str(exc))
        if errors:
            raise forms.ValidationError(errors)
        return rules


@admin.register(Intent)
class IntentAdmin(admin.ModelAdmin):
    form = IntentForm
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


class AbandonedCallbacks(admin.SimpleListFilter):
    """Callbacks given up after the whole retry schedule: failed, and no longer due."""

    title = "callback abandoned"
    parameter_name = "abandoned"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "abandoned callbacks")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[SideEffect]) -> QuerySet[SideEffect]:
        if self.value() != "yes":
            return queryset
        return queryset.filter(tool="callback", status=LedgerStatus.FAILED, ticket__callback_due_at__isnull=True)


@admin.register(SideEffect)
class SideEffectAdmin(admin.ModelAdmin):
    list_display = ["idempotency_key", "tool", "status", "attempts", "last_error", "created_at", "finished_at"]
    list_filter = [AbandonedCallbacks, "tool", "status"]
    raw_id_fields = ["ticket"]
    actions = ["resend_callbacks"]

    @admin.action(description="Resend the callback of the selected tickets")
    def resend_callbacks(self, request: HttpRequest, queryset: QuerySet[SideEffect]) -> None:
        tickets = {row.ticket for row in queryset.filter(tool="callback").select_related("ticket")}
        sent = sum(callback_resend(ticket=ticket) for ticket in tickets)
        self.message_user(request, f"{sent} callback(s) due again, with a fresh retry schedule.")
