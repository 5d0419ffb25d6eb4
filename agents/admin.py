from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin

from agents.intents.safe_regex import RuleError, validate_rule
from agents.models import DeadLetter, Intent, SideEffect, Trace


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


@admin.register(SideEffect)
class SideEffectAdmin(admin.ModelAdmin):
    list_display = ["idempotency_key", "tool", "status", "attempts", "last_error", "created_at", "finished_at"]
    list_filter = ["tool", "status"]
    raw_id_fields = ["ticket"]
