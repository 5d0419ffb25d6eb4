"""A client team's first hour, through the client generated from the schema (tests/client/conftest.py)
against a live server and a real Celery worker: submit with an idempotency key, poll to the
outcome, list with filters, replay a dead letter, and verify the webhook with `standardwebhooks`."""

from __future__ import annotations

import importlib
import json
import uuid
from types import ModuleType
from typing import Any

import pytest
from standardwebhooks import Webhook

from agents.models import Intent
from tests.conftest import wait_for
from tests.factories import client_with_token

pytestmark = [pytest.mark.pipeline]
SETTLED = {"resolved", "awaiting_review", "dead_lettered"}


def op(generated: ModuleType, name: str) -> Any:
    return importlib.import_module(f"{generated.__name__}.api.v1.{name}")


def model(generated: ModuleType, name: str) -> Any:
    return getattr(importlib.import_module(f"{generated.__name__}.models"), name)


@pytest.fixture
def team(generated, live_server, pipeline, recorder):
    """A client made by an operator; the team's `AuthenticatedClient` holding its key."""
    client, key = client_with_token(name="team", callback_url=recorder.url)
    http = generated.AuthenticatedClient(base_url=live_server.url, token=key, raise_on_unexpected_status=True)
    return http, client


def submit(generated: ModuleType, http: Any, body: str, key: str) -> Any:
    ticket_input = model(generated, "TicketInputRequest")(
        body=body, customer_ref="cust-7", metadata=model(generated, "TicketInputRequestMetadata").from_dict({"a": 1})
    )
    return op(generated, "tickets_create").sync_detailed(client=http, body=ticket_input, idempotency_key=key)


def poll(generated: ModuleType, http: Any, ticket_id: Any, statuses: set[str] = SETTLED) -> Any:
    def outcome() -> Any:
        ticket = op(generated, "tickets_retrieve").sync(client=http, ticket_id=str(ticket_id))
        return ticket if ticket.status.value in statuses else None

    return wait_for(outcome, timeout=30, what=f"ticket {ticket_id} to reach {sorted(statuses)}")


def test_submit_with_an_idempotency_key_then_poll_to_the_outcome(generated, team):
    http, _ = team
    key = str(uuid.uuid4())
    first = submit(generated, http, "My card still hasn't arrived, where is it?", key)
    again = submit(generated, http, "My card still hasn't arrived, where is it?", key)

    assert first.status_code == 202 and again.status_code == 200
    assert again.parsed.id == first.parsed.id and again.headers["Idempotent-Replayed"] == "true"
    assert first.headers["Location"] == first.parsed.url
    assert first.headers["RateLimit-Policy"].startswith('"client";q=')
    ticket = poll(generated, http, first.parsed.id)
    assert ticket.status.value == "resolved" and ticket.intent == "card_arrival"
    assert "cust-7" in ticket.resolution.reply
    assert [step.stage for step in ticket.trace] == ["parse", "classify", "decide", "execute"]


def test_list_with_filters_and_follow_the_cursor(generated, team):
    http, _ = team
    ids = [submit(generated, http, "My card still hasn't arrived", str(uuid.uuid4())).parsed.id for _ in range(3)]
    for ticket_id in ids:
        poll(generated, http, ticket_id)
    tickets_list = op(generated, "tickets_list")
    resolved = model(generated, "TicketsListStatus")("resolved")

    page = tickets_list.sync(client=http, status=resolved, intent="card_arrival", page_size=2)
    assert len(page.results) == 2 and page.next_
    cursor = dict(part.split("=", 1) for part in page.next_.split("?", 1)[1].split("&"))["cursor"]
    rest = tickets_list.sync(client=http, status=resolved, intent="card_arrival", page_size=2, cursor=cursor)
    assert {t.id for t in page.results + rest.results} == set(ids)
    assert tickets_list.sync(client=http, intent="no_such_intent").results == []


def test_replay_a_dead_letter(generated, team, recorder_factory, settings):
    http, _ = team
    downstream = recorder_factory()
    downstream.statuses = [500, 500, 500]  # the action's downstream call fails until it is out of attempts
    settings.PIPELINE = {**settings.PIPELINE, "MAX_ATTEMPTS": 3}
    Intent.objects.filter(name="lost_or_stolen_card").update(webhook_url=downstream.url)

    created = submit(generated, http, "Someone has stolen my card", str(uuid.uuid4())).parsed
    assert poll(generated, http, created.id).status.value == "dead_lettered"

    replayed = op(generated, "tickets_replay").sync_detailed(client=http, ticket_id=str(created.id))
    assert replayed.status_code == 202
    assert poll(generated, http, created.id, {"resolved"}).status.value == "resolved"
    again = op(generated, "tickets_replay").sync_detailed(client=http, ticket_id=str(created.id))
    assert again.status_code == 409 and again.parsed.error == "not_replayable"


def test_verify_the_webhook_with_standardwebhooks_and_read_it_with_the_generated_model(generated, team, recorder):
    http, client = team
    created = submit(generated, http, "My card still hasn't arrived", str(uuid.uuid4())).parsed
    poll(generated, http, created.id)
    wait_for(lambda: recorder.requests, what="the callback")
    request = recorder.requests[0]

    payload = Webhook(client.webhook_secret).verify(request["body"], request["headers"])

    event = model(generated, "CallbackResolved").from_dict(payload)
    assert event.event.value == "ticket.resolved" and str(event.ticket.id) == str(created.id)
    assert request["headers"]["webhook-id"] == request["headers"]["Idempotency-Key"]
    tampered = json.dumps({**payload, "event": "ticket.dead_lettered"}).encode()
    with pytest.raises(Exception, match="signature"):
        Webhook(client.webhook_secret).verify(tampered, request["headers"])


def test_errors_arrive_as_the_error_model(generated, live_server, pipeline):
    bad = generated.AuthenticatedClient(base_url=live_server.url, token="sk_not_a_key")
    response = op(generated, "tickets_list").sync_detailed(client=bad)
    assert response.status_code == 401 and response.parsed.error == "authentication_failed"
    _, key = client_with_token(name="errors")
    good = generated.AuthenticatedClient(base_url=live_server.url, token=key)
    missing = op(generated, "tickets_retrieve").sync_detailed(client=good, ticket_id=str(uuid.uuid4()))
    assert missing.status_code == 404 and missing.parsed.error == "not_found"
