"""What the API reads and writes: the request's validation, the ticket and its trace as answered, the list's
filters and page."""

from __future__ import annotations

import json
import re
from typing import Any

from django.conf import settings
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    extend_schema_field,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination

from agents.pipeline.spec import SPEC
from project.netguard import BlockedURL, LookupFailed, check_url
from project.sensitive import redact_locations
from project.textnorm import nfkc
from tickets.api.base import (
    METADATA_MAX_BYTES,
    METADATA_MAX_DEPTH,
    MetadataField,
    QueryText,
)
from tickets.api.errors import LookupUnavailable
from tickets.models import Priority, Ticket
from tickets.selectors import ticket_trace

IDEMPOTENCY_KEY = re.compile(r"^[\x20-\x7e]{0,255}$")  # empty: no key


def _check_text(value: Any, path: str = "value") -> None:
    """Postgres stores neither NUL characters nor lone surrogates: refuse them up front."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValidationError({path: "NUL characters are not allowed"})
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValidationError({path: "text is not valid Unicode"}) from exc


def _check_json(value: Any, depth: int = 0, path: str = "metadata") -> None:
    if depth > METADATA_MAX_DEPTH:
        raise serializers.ValidationError(f"nested deeper than {METADATA_MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, path)
            _check_json(item, depth + 1, path)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1, path)
    else:
        _check_text(value, path)


class StrictSerializer(serializers.Serializer):
    """Unknown fields are an error, not silently dropped."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise ValidationError({name: "unknown field" for name in unknown})
            # DRF would turn 123 into "123": a wrong type is an error, not a guess.
            wrong = {
                name: "must be a string"
                for name, field in self.fields.items()
                if isinstance(field, serializers.CharField) and name in data and not isinstance(data[name], str)
            }
            if wrong:
                raise ValidationError(wrong)
        return super().to_internal_value(data)


class TicketInputSerializer(StrictSerializer):
    customer_ref = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    channel = serializers.RegexField(r"^[a-z0-9_-]{1,32}$", required=False, default="api")
    subject = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    body = serializers.CharField(max_length=settings.TICKET_BODY_MAX_CHARS, trim_whitespace=True)
    metadata = MetadataField(required=False, default=dict)
    priority = serializers.ChoiceField(
        choices=[label for _, label in Priority.choices], required=False, default="normal"
    )
    callback_url = serializers.URLField(max_length=200, required=False, allow_blank=True, default="")

    def validate_body(self, value: str) -> str:
        # The limit holds after NFKC too: "㏘" is one character typed, four normalised.
        if len(nfkc(value)) > settings.TICKET_BODY_MAX_CHARS:
            raise serializers.ValidationError(
                f"Ensure this field has no more than {settings.TICKET_BODY_MAX_CHARS} characters once normalised (NFKC)."
            )
        return value

    def validate_callback_url(self, value: str) -> str:
        if value:
            try:
                check_url(value)
            except LookupFailed as exc:
                raise LookupUnavailable(f"this URL's name did not resolve now ({exc}); retry later") from exc
            except BlockedURL as exc:
                raise serializers.ValidationError(f"this URL may not be called back: {exc}") from exc
        return value

    def validate_metadata(self, value: dict[str, Any]) -> dict[str, Any]:
        _check_json(value)
        if len(json.dumps(value)) > METADATA_MAX_BYTES:
            raise serializers.ValidationError(f"metadata is larger than {METADATA_MAX_BYTES} bytes")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        for name in ("customer_ref", "subject", "body"):
            _check_text(attrs.get(name), name)
        attrs["priority"] = {label: value for value, label in Priority.choices}[attrs["priority"]]
        return attrs


class RedactedText(serializers.CharField):
    """An error text as a tenant may read it: URLs, addresses and host names replaced (they name the
    operator's network); the full text stays in the trace row, for operators."""

    def to_representation(self, value: Any) -> str:
        return redact_locations(str(value))


class TraceSerializer(serializers.Serializer):
    stage = serializers.CharField()
    attempt = serializers.IntegerField()
    status = serializers.CharField()
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField()
    duration_ms = serializers.FloatField()
    confidence = serializers.FloatField(allow_null=True)
    tier = serializers.CharField()
    model = serializers.CharField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cost_usd = serializers.DecimalField(max_digits=12, decimal_places=6)
    cache_hit = serializers.BooleanField()
    error_class = serializers.CharField()
    error_message = RedactedText()
    output = serializers.JSONField()


class TicketOutputSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    # The ticket's own states and the stages' (the spec's): the column holds no choices of its own.
    status = serializers.ChoiceField(choices=[(s, s.replace("_", " ").title()) for s in SPEC.statuses], required=False)
    priority = serializers.CharField(source="get_priority_display")
    resolution = serializers.SerializerMethodField()

    class Meta:
        model = Ticket
        fields = [
            "id",
            "url",
            "status",
            "priority",
            "customer_ref",
            "channel",
            "subject",
            "body",
            "metadata",
            "callback_url",
            "intent",
            "confidence",
            "resolution",
            "created_at",
            "updated_at",
            "resolved_at",
        ]

    @extend_schema_field(OpenApiTypes.STR)
    def get_url(self, ticket: Ticket) -> str:
        return reverse("ticket-detail", kwargs={"ticket_id": ticket.id})

    @extend_schema_field(
        inline_serializer("Resolution", {"action": serializers.CharField(), "reply": serializers.CharField()})
    )
    def get_resolution(self, ticket: Ticket) -> dict[str, Any]:
        return {"action": ticket.action, "reply": ticket.reply}


_OUTPUT: TicketOutputSerializer | None = None


def ticket_representation(ticket: Ticket) -> dict[str, Any]:
    """`TicketOutputSerializer(ticket).data`, from one serializer built once per process: a
    ModelSerializer builds its fields from the model on every instance, which cost the hot POST more
    CPU than the rest of its answer. Its fields keep no state between calls."""
    global _OUTPUT
    if _OUTPUT is None:
        _OUTPUT = TicketOutputSerializer()
    return _OUTPUT.to_representation(ticket)


class TicketDetailSerializer(TicketOutputSerializer):
    trace = serializers.SerializerMethodField()

    class Meta(TicketOutputSerializer.Meta):
        fields = [*TicketOutputSerializer.Meta.fields, "trace"]

    @extend_schema_field(TraceSerializer(many=True))
    def get_trace(self, ticket: Ticket) -> list[dict[str, Any]]:
        return TraceSerializer(ticket_trace(ticket=ticket), many=True).data


class TicketCursorPagination(CursorPagination):
    ordering = "-created_at"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class TicketFilterSerializer(StrictSerializer):
    status = serializers.ChoiceField(choices=list(SPEC.statuses), required=False)
    intent = QueryText()
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
    cursor = QueryText()
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=200)


# What TicketCursorPagination answers (an APIView's pagination is invisible to drf-spectacular).
TICKET_PAGE = inline_serializer(
    "PaginatedTicketList",
    {
        "next": serializers.CharField(allow_null=True),
        "previous": serializers.CharField(allow_null=True),
        "results": TicketOutputSerializer(many=True),
    },
)
