"""Clients, their API keys and tickets in the admin: a UI over the services. A new key or webhook
secret is shown once, in the message after the save; only its prefix stays visible."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from project.sensitive import mask_sensitive, mask_url
from tickets.models import ApiKey, CallbackDelivery, Client, DeliveryStatus, Ticket
from tickets.services import api_key_create, api_key_revoke, api_key_rotate
from tickets.webhooks import callback_resend
from tickets.webhooks.signing import DEFAULT_OVERLAP, webhook_secret_rotate

SHOWN_ONCE = "copy it now, it is not shown again"


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    fields = readonly_fields = ["name", "prefix", "created_at", "expires_at", "revoked_at", "last_used_at"]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a key is added from the API keys page, which shows it once


@admin.register(Client)
class ClientAdmin(admin.ModelAdmin):
    list_display = ["name", "is_active", "callback_url", "created_at"]
    fields = ["name", "callback_url", "is_active", "signing_secret", "webhook_secret_previous_until", "created_at"]
    readonly_fields = ["signing_secret", "webhook_secret_previous_until", "created_at"]
    search_fields = ["name"]
    inlines = [ApiKeyInline]
    actions = ["rotate_webhook_secret"]

    @admin.display(description="Webhook signing secret")
    def signing_secret(self, obj: Client) -> str:
        return f"{obj.webhook_secret[:10]}…" if obj.webhook_secret else "(made on save)"

    def save_model(self, request: HttpRequest, obj: Client, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not change:
            _, key = api_key_create(client=obj, name="default")
            messages.warning(
                request,
                f"Client {obj.name!r}: API key {key} — webhook signing secret {obj.webhook_secret} — {SHOWN_ONCE}.",
            )

    @admin.action(description=f"Rotate the webhook signing secret (the old one signs too for {DEFAULT_OVERLAP})")
    def rotate_webhook_secret(self, request: HttpRequest, queryset: QuerySet[Client]) -> None:
        for client in queryset:
            secret = webhook_secret_rotate(client=client)
            messages.warning(request, f"Client {client.name!r}: new webhook signing secret {secret} — {SHOWN_ONCE}.")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "client", "prefix", "created_at", "expires_at", "revoked_at", "last_used_at"]
    list_filter = ["client"]
    search_fields = ["name", "prefix", "client__name"]
    actions = ["revoke", "rotate"]

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        if obj is None:
            return ["client", "name", "expires_at"]
        return ["client", "name", "prefix", "created_at", "expires_at", "revoked_at", "last_used_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        return [] if obj is None else ["client", "prefix", "created_at", "revoked_at", "last_used_at"]

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            return super().save_model(request, obj, form, change)
        new, key = api_key_create(client=obj.client, name=obj.name, expires_at=obj.expires_at)
        obj.pk, obj.prefix, obj.key_hash, obj.created_at = new.pk, new.prefix, new.key_hash, new.created_at
        messages.warning(request, f"API key {obj.name!r} of {obj.client}: {key} — {SHOWN_ONCE}.")

    @admin.action(description="Revoke now")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        now = timezone.now()
        for key in queryset:
            api_key_revoke(key=key, at=now)
        messages.success(request, f"Revoked {len(queryset)} key(s).")

    @admin.action(description=f"Rotate (the old key keeps working for {DEFAULT_OVERLAP})")
    def rotate(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset.select_related("client"):
            new, secret = api_key_rotate(key=key, grace=DEFAULT_OVERLAP)
            messages.warning(request, f"API key {new.name!r} of {new.client}: {secret} — {SHOWN_ONCE}.")


@admin.register(Ticket)
class TicketAdmin(admin.ModelAdmin):
    list_display = ["id", "client", "status", "intent", "confidence", "priority", "created_at"]
    list_filter = ["status", "priority", "client"]
    search_fields = ["id", "customer_ref", "body", "intent"]
    readonly_fields = [f.name for f in Ticket._meta.fields]
    date_hierarchy = "created_at"
    # What a reviewer (any login but a superuser) sees masked: the customer's card numbers, e-mail
    # addresses and phone numbers, and callback URLs without path or query (they carry tokens).
    MASKED = {"subject": "subject_masked", "body": "body_masked", "reply": "reply_masked"}
    MASKED |= {"callback_url": "callback_url_masked", "metadata": "metadata_masked", "context": "context_masked"}

    def get_fields(self, request: HttpRequest, obj: Ticket | None = None) -> list[str]:
        fields = [f.name for f in Ticket._meta.fields]
        return fields if request.user.is_superuser else [self.MASKED.get(f, f) for f in fields]

    def get_readonly_fields(self, request: HttpRequest, obj: Ticket | None = None) -> list[str]:
        return self.get_fields(request, obj)

    @admin.display(description="subject")
    def subject_masked(self, ticket: Ticket) -> str:
        return mask_sensitive(ticket.subject)

    @admin.display(description="body")
    def body_masked(self, ticket: Ticket) -> str:
        return mask_sensitive(ticket.body)

    @admin.display(description="reply")
    def reply_masked(self, ticket: Ticket) -> str:
        return mask_sensitive(ticket.reply)

    @admin.display(description="callback url")
    def callback_url_masked(self, ticket: Ticket) -> str:
        return mask_url(ticket.callback_url)

    @admin.display(description="metadata")
    def metadata_masked(self, ticket: Ticket) -> str:
        return mask_sensitive(json.dumps(ticket.metadata, ensure_ascii=False))

    @admin.display(description="context")
    def context_masked(self, ticket: Ticket) -> str:
        return mask_sensitive(json.dumps(ticket.context, ensure_ascii=False))


class AbandonedCallbacks(admin.SimpleListFilter):
    """Callbacks given up after the whole retry schedule: failed, and no longer due."""

    title = "callback abandoned"
    parameter_name = "abandoned"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "abandoned callbacks")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[CallbackDelivery]) -> QuerySet[CallbackDelivery]:
        if self.value() != "yes":
            return queryset
        return queryset.filter(status=DeliveryStatus.FAILED, ticket__callback_due_at__isnull=True)


@admin.register(CallbackDelivery)
class CallbackDeliveryAdmin(admin.ModelAdmin):
    list_display = ["idempotency_key", "status", "attempts", "last_error", "created_at", "finished_at"]
    list_filter = [AbandonedCallbacks, "status"]
    raw_id_fields = ["ticket"]
    actions = ["resend_callbacks"]

    @admin.action(description="Resend the callback of the selected tickets")
    def resend_callbacks(self, request: HttpRequest, queryset: QuerySet[CallbackDelivery]) -> None:
        tickets = {row.ticket for row in queryset.select_related("ticket")}
        sent = sum(callback_resend(ticket=ticket) for ticket in tickets)
        self.message_user(request, f"{sent} callback(s) due again, with a fresh retry schedule.")
