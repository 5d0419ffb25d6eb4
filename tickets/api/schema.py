"""What drf-spectacular cannot infer: the error answers, the input patterns, the bearer scheme, the callback as webhooks (one per event,
with its Standard Webhooks headers), the rate-limit headers of every answer, and links between
operations (a submitted ticket's id opens its detail and its replay)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, OpenApiWebhook, extend_schema, inline_serializer
from rest_framework import serializers

from tickets.models import SETTLED_STATUSES
from tickets.webhooks.signing import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER

# What tickets/api/serializers.py's validation accepts, stated in the schema, so a request valid by the schema
# is accepted.
NO_NUL = r"^[^\x00]*$"
NO_NUL_NOT_EMPTY = r"^[^\x00]+$"
NOT_BLANK = r"^[^\x00]*[^\s\x00][^\x00]*$"  # trimmed, something is left
HOST_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
CALLBACK_URL = (
    rf"^(?:https?://{HOST_LABEL}(?:\.{HOST_LABEL})*\.[a-z]{{2,63}}(?::[1-9][0-9]{{0,3}})?(?:/[A-Za-z0-9._~/-]*)?)?$"
)


# What the schema adds to TicketInputSerializer's fields: patterns its validation enforces
# (`postprocess` puts them in; the request object also takes no other property).
INPUT_PATTERNS = {"customer_ref": NO_NUL, "subject": NO_NUL, "body": NOT_BLANK, "callback_url": CALLBACK_URL}


ERROR = inline_serializer(
    "Error",
    {
        "error": serializers.CharField(help_text="A stable code: validation_error, not_found, throttled, ..."),
        "detail": serializers.JSONField(help_text="A message, or the field errors by field name."),
    },
)
_ERROR_TEXT = {
    400: "Bad input; `detail` names each field.",
    401: "No API key, or an invalid, expired or revoked one.",
    404: "No such ticket (or another client's), or a `cursor` this API did not give.",
    405: "Method not allowed.",
    406: "Only `application/json` answers are offered.",
    409: "Conflict (see `error`).",
    413: "The request body is over the limit.",
    414: "The URL is too long: the web server refuses it before the API reads it (its body is not JSON).",
    415: "Send `Content-Type: application/json`.",
    429: "Over the client's rate, or its share of the work in flight; see `Retry-After` and `RateLimit`.",
    503: "Overloaded or a backing service is down; see `Retry-After`.",
}


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """The error answers an operation can give, each in the one error shape (every operation can
    answer 401, 406, 413, 429 and 503: a body over the limit is refused on any method), and 414,
    which the web server gives in its own format."""
    answers = {
        code: OpenApiResponse(ERROR, description=_ERROR_TEXT[code])
        for code in sorted({*codes, 401, 406, 413, 429, 503})
    }
    return {**answers, 414: OpenApiResponse(description=_ERROR_TEXT[414])}


class ClientKeyScheme(OpenApiAuthenticationExtension):
    target_class = "tickets.auth.ClientTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (`sk_…`): `manage.py create_client`, `create_api_key`, or the admin.",
        }


def _payload(status: str) -> serializers.Serializer:
    name = "".join(part.title() for part in status.split("_"))
    ticket = inline_serializer(
        f"Callback{name}Ticket",
        {
            "id": serializers.UUIDField(),
            "idempotency_key": serializers.CharField(allow_null=True),
            "customer_ref": serializers.CharField(allow_blank=True),
            "status": serializers.ChoiceField(choices=[status]),
            "intent": serializers.CharField(allow_blank=True),
            "confidence": serializers.FloatField(allow_null=True),
            "action": serializers.CharField(allow_blank=True),
            "reply": serializers.CharField(allow_blank=True),
            "resolved_at": serializers.DateTimeField(allow_null=True),
        },
    )
    return inline_serializer(
        f"Callback{name}", {"event": serializers.ChoiceField(choices=[f"ticket.{status}"]), "ticket": ticket}
    )


_EVENTS = {
    "resolved": "The ticket was resolved: `ticket.reply` is what the customer was told.",
    "awaiting_review": "The pipeline was unsure: a person will decide (a later `ticket.resolved` follows).",
    "dead_lettered": "Out of attempts; `POST /api/v1/tickets/{id}/replay/` runs it again.",
}
assert set(_EVENTS) == set(SETTLED_STATUSES)
WEBHOOKS = [
    OpenApiWebhook(
        name=f"ticket.{status}",
        decorator=extend_schema(
            operation_id=f"webhook_ticket_{status}",
            summary=f"ticket.{status}",
            description=f"{text} POSTed to the ticket's `callback_url` (or the client's default), signed "
            "as Standard Webhooks: verify with any Standard Webhooks library and your `whsec_` secret. Any "
            "2xx acknowledges it; anything else is retried with backoff, with the same `webhook-id`.",
            request=_payload(status),
            responses={200: OpenApiResponse(description="Received (any 2xx).")},
        ),
    )
    for status, text in _EVENTS.items()
]
# drf-spectacular's WEBHOOKS setting names each one by its import path.
RESOLVED, AWAITING_REVIEW, DEAD_LETTERED = WEBHOOKS

_WEBHOOK_HEADERS = {
    ID_HEADER: "The message's id: the same on every retry of it; deduplicate on it.",
    TIMESTAMP_HEADER: "Unix seconds when it was signed; refuse one more than 5 minutes off.",
    SIGNATURE_HEADER: "`v1,<base64 HMAC-SHA256 of '<webhook-id>.<webhook-timestamp>.<body>'>`; during a "
    "secret rotation two, space-separated (one per secret).",
    "Idempotency-Key": "The same value as `webhook-id`.",
}
_RATELIMIT_HEADERS = {
    "RateLimit-Policy": 'The client\'s quota: `"client";q=<requests>;w=<seconds>` (a sliding window).',
    "RateLimit": '`"client";r=<requests left>;t=<seconds until there is room>` '
    "(IETF draft-ietf-httpapi-ratelimit-headers).",
}
_LINKS = {
    "GetTicket": {"operationId": "tickets_retrieve", "parameters": {"ticket_id": "$response.body#/id"}},
    "ReplayTicket": {"operationId": "tickets_replay", "parameters": {"ticket_id": "$response.body#/id"}},
}


def _header(description: str, *, required: bool = False) -> dict[str, Any]:
    return {"schema": {"type": "string"}, "description": description, "required": required}


def postprocess(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Headers every answer carries, links, and the webhooks' headers (drf-spectacular sets none)."""
    for item in result.get("paths", {}).values():
        for operation in item.values():
            for code, response in operation.get("responses", {}).items():
                headers = response.setdefault("headers", {})
                headers.update({name: _header(text) for name, text in _RATELIMIT_HEADERS.items()})
                if code in ("429", "503"):
                    headers["Retry-After"] = _header("Seconds to wait before trying again.", required=True)
                if code in ("200", "202") and operation["operationId"] in ("tickets_create", "tickets_replay"):
                    response["links"] = _LINKS
    request_body = result["components"]["schemas"]["TicketInputRequest"]
    request_body["additionalProperties"] = False
    for name, pattern in INPUT_PATTERNS.items():
        request_body["properties"][name]["pattern"] = pattern
    request_body["properties"]["callback_url"]["description"] = (
        "Where this ticket's webhook goes (default: the client's). http or https (https only in production), "
        "to a host whose addresses are all public: a loopback, private, link-local or metadata address is refused."
    )
    for item in result.get("webhooks", {}).values():
        item["post"]["parameters"] = [
            {"in": "header", "name": name, "required": True, "schema": {"type": "string"}, "description": text}
            for name, text in _WEBHOOK_HEADERS.items()
        ]
    return result
