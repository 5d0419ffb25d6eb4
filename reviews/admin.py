from __future__ import annotations

from django.contrib import admin

from reviews.models import Review


@admin.register(Review)
class ReviewAdmin(admin.ModelAdmin):
    list_display = ["ticket", "reason", "status", "suggested_intent", "suggested_confidence", "created_at"]
    list_filter = ["reason", "status"]
    raw_id_fields = ["ticket", "assignee"]
