from __future__ import annotations

from django.contrib import admin

from tickets.models import Client, Ticket


@admin.register(Client)
class ClientAdmin(admin.ModelAdmin):
    list_display = ["name", "token_prefix", "is_active", "callback_url", "created_at"]
    readonly_fields = ["token_hash", "token_prefix", "created_at"]
    search_fields = ["name"]


@admin.register(Ticket)
class TicketAdmin(admin.ModelAdmin):
    list_display = ["id", "client", "status", "intent", "confidence", "priority", "created_at"]
    list_filter = ["status", "priority", "client"]
    search_fields = ["id", "customer_ref", "body", "intent"]
    readonly_fields = [f.name for f in Ticket._meta.fields]
    date_hierarchy = "created_at"
