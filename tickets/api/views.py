"""The public REST API: thin views over ticket services and selectors."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from agents.pipeline.human import ticket_replay
from agents.pipeline.intake import ticket_submit
from project.netguard import lookups_for
from tickets.api.backpressure import admit
from tickets.api.base import (
    ClientApi,
    InvalidCursor,
    JSONParser,
)
from tickets.api.schema import errors
from tickets.api.serializers import (
    IDEMPOTENCY_KEY,
    TICKET_PAGE,
    TicketCursorPagination,
    TicketDetailSerializer,
    TicketFilterSerializer,
    TicketInputSerializer,
    TicketOutputSerializer,
    ticket_representation,
)
from tickets.models import IllegalTransition, Ticket
from tickets.selectors import ticket_get, ticket_list
from tickets.services import IdempotencyConflict
from tickets.webhooks import callback_resend


class TicketListCreateApi(ClientApi):
    """Submit a request; list your requests."""

    parser_classes = [JSONParser]

    @extend_schema(
        operation_id="tickets_create",
        summary="Submit a request",
        request=TicketInputSerializer,
        examples=[
            OpenApiExample(
                "A card that has not arrived",
                request_only=True,
                value={
                    "body": "My new card still has not arrived, it has been two weeks.",
                    "customer_ref": "cust-1042",
                    "channel": "email",
                    "priority": "normal",
                    "metadata": {"locale": "en-GB"},
                    # A name that resolves to a public address (the guard refuses one that does not resolve).
                    "callback_url": "https://example.com/tickets",
                },
            ),
        ],
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                {"type": "string", "pattern": IDEMPOTENCY_KEY.pattern},
                OpenApiParameter.HEADER,
                description="Retries with the same key return the same ticket (200); the same key with "
                "another body is a 409. Up to 255 printable ASCII characters (a UUID is a good key); empty is none.",
            ),
            OpenApiParameter(
                "Location",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                response=[200, 202],
                required=True,
                description="The ticket's URL.",
            ),
            OpenApiParameter(
                "Idempotent-Replayed",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                response=[200],
                enum=["true"],
                required=True,
                description="This is the ticket an earlier request with the key made.",
            ),
        ],
        responses={
            200: OpenApiResponse(TicketOutputSerializer, description="A retry: the ticket the key made before."),
            202: OpenApiResponse(TicketOutputSerializer, description="Accepted: the pipeline starts on it."),
            **errors(400, 409, 413, 415),
        },
    )
    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise ValidationError({"non_field_errors": "the body must be a JSON object"})
        key = request.headers.get("Idempotency-Key") or None
        if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
            raise ValidationError({"Idempotency-Key": "at most 255 printable ASCII characters"})
        serializer = TicketInputSerializer(data=request.data)
        with lookups_for(request.user.pk):  # its callback URL's lookups count against this client only
            serializer.is_valid(raise_exception=True)
        refused = admit(request.user.pk)
        if refused:
            return Response(
                {"error": "overloaded", "detail": refused.detail},
                status=refused.status,
                headers={"Retry-After": str(settings.BACKPRESSURE_RETRY_AFTER)},
            )
        try:
            ticket, created = ticket_submit(
                client=request.user, payload=serializer.validated_data, idempotency_key=key, admitted=True
            )
        except IdempotencyConflict as exc:
            return Response({"error": "idempotency_conflict", "detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        body = ticket_representation(ticket)
        headers = {"Location": body["url"]}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        return Response(body, status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK, headers=headers)

    @extend_schema(
        operation_id="tickets_list",
        summary="List your requests",
        parameters=[TicketFilterSerializer],
        responses={200: TICKET_PAGE, **errors(400, 404)},
    )
    def get(self, request: Request) -> Response:
        repeated = sorted(name for name, values in request.query_params.lists() if len(values) > 1)
        if repeated:  # `dict()` would keep the last and drop the rest without a word
            raise ValidationError({name: "given more than once; give it once" for name in repeated})
        filters = TicketFilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        params = {k: v for k, v in filters.validated_data.items() if k not in ("cursor", "page_size")}
        paginator = TicketCursorPagination()
        try:
            page = paginator.paginate_queryset(ticket_list(client=request.user, **params), request, view=self)
        except NotFound as exc:  # a cursor this API did not give: no such page (any string is a valid cursor)
            raise InvalidCursor from exc
        return paginator.get_paginated_response(TicketOutputSerializer(page, many=True).data)


class TicketDetailApi(ClientApi):
    """A ticket's status, resolution and ordered trace."""

    @extend_schema(
        operation_id="tickets_retrieve",
        summary="A request's outcome",
        responses={200: TicketDetailSerializer, **errors(404)},
    )
    def get(self, request: Request, ticket_id: str) -> Response:
        ticket = owned_ticket(request, ticket_id)
        return Response(TicketDetailSerializer(ticket).data)


def owned_ticket(request: Request, ticket_id: str) -> Ticket:
    """The client's own ticket; a 404 for anything else (another client's tickets do not exist)."""
    ticket = ticket_get(client=request.user, ticket_id=ticket_id)
    if ticket is None:
        raise NotFound("no such ticket")
    return ticket


class TicketReplayApi(ClientApi):
    """Re-run a dead-lettered ticket from the stage that failed."""

    @extend_schema(
        operation_id="tickets_replay",
        summary="Replay a dead letter",
        request=None,
        responses={202: TicketOutputSerializer, **errors(404, 409)},
    )
    def post(self, request: Request, ticket_id: str) -> Response:
        ticket = owned_ticket(request, ticket_id)
        try:
            ticket = ticket_replay(ticket=ticket)
        except IllegalTransition as exc:
            return Response({"error": "not_replayable", "detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(TicketOutputSerializer(ticket).data, status=status.HTTP_202_ACCEPTED)


class TicketCallbackApi(ClientApi):
    """Send a settled ticket's callback again: one the client's endpoint lost, or that was abandoned
    after the whole retry schedule. The same webhook-id as before, so the receiver can dedupe."""

    @extend_schema(
        operation_id="tickets_callback_resend",
        summary="Resend a settled ticket's callback",
        request=None,
        responses={202: TicketOutputSerializer, **errors(404, 409)},
    )
    def post(self, request: Request, ticket_id: str) -> Response:
        ticket = owned_ticket(request, ticket_id)
        if not callback_resend(ticket=ticket):
            detail = f"ticket is {ticket.status}; its callback comes when it settles"
            return Response({"error": "not_settled", "detail": detail}, status=status.HTTP_409_CONFLICT)
        return Response(TicketOutputSerializer(ticket).data, status=status.HTTP_202_ACCEPTED)
