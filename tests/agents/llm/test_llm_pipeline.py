"""Claude in the pipeline: a real Celery worker takes the hand-over on the `llm` queue."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import agents.tasks  # noqa: F401 - registers the batch tasks with the worker's app
from agents.llm import batches
from agents.llm.anthropic_client import AnthropicClient
from agents.llm.base import Usage
from agents.llm.pricing import cost_usd
from agents.llm.selectors import llm_cost_by_client, llm_cost_by_intent, llm_cost_for_ticket
from agents.models import Trace
from agents.pipeline.intake import ticket_submit
from reviews.models import Review
from tests.conftest import wait_for
from tests.factories import client_with_token
from tickets.models import TERMINAL, Priority, Status, Ticket

pytestmark = pytest.mark.pipeline


def submit(client, body: str, **fields) -> str:
    payload = {"body": body, "customer_ref": "alice", "channel": "email", **fields}
    ticket, _ = ticket_submit(client=client, payload=payload)
    return str(ticket.pk)


def settled(ticket_id: str, timeout: float = 20.0) -> Ticket:
    return wait_for(
        lambda: (t := Ticket.objects.get(pk=ticket_id)).status in TERMINAL and t,
        timeout=timeout,
        what=f"ticket {ticket_id} to settle",
    )


def classify_traces(ticket_id: str) -> list[Trace]:
    return list(Trace.objects.filter(ticket_id=ticket_id, stage="classify").order_by("started_at", "id"))


def test_a_request_the_rules_miss_is_handed_to_claude_and_resolved_with_its_cost(pipeline, llm):
    client, _ = client_with_token()
    ticket_id = submit(client, "Hello, where is my new plastic? [[intent:card_arrival]] [[confidence:0.97]]")

    ticket = settled(ticket_id)

    assert ticket.status == Status.RESOLVED and ticket.intent == "card_arrival" and ticket.confidence == 0.97
    cheap, claude = classify_traces(ticket_id)
    assert cheap.tier == "" and cheap.output["intent"] == ""  # the rules abstained: handed over
    assert claude.tier == "claude" and claude.model == "claude-haiku-4-5" and claude.status == "ok"
    assert claude.input_tokens > 0 and claude.output_tokens > 0 and claude.cost_usd > 0
    assert ticket.cost_usd == claude.cost_usd
    assert llm_cost_for_ticket(ticket_id=ticket_id)["cost_usd"] == claude.cost_usd
    today = datetime.now(UTC).date()
    assert {"client_id": client.pk, "cost_usd": claude.cost_usd, "calls": 1}.items() <= next(
        row for row in llm_cost_by_client(day=today) if row["client_id"] == client.pk
    ).items()
    assert any(
        row["intent"] == "card_arrival" and row["cost_usd"] >= claude.cost_usd for row in llm_cost_by_intent(day=today)
    )


def test_garbage_from_claude_sends_the_ticket_to_a_person(pipeline, llm):
    client, _ = client_with_token()
    ticket_id = submit(client, "Hello, where is my new plastic? [[reply:I am not JSON, sorry]]")

    ticket = settled(ticket_id)

    assert ticket.status == Status.AWAITING_REVIEW
    assert Review.objects.get(ticket_id=ticket_id).reason == "low_confidence"
    assert [t.tier for t in classify_traces(ticket_id)] == ["", ""]  # asked, but no usable answer


def test_an_overloaded_claude_is_retried_through_celery_then_resolves(pipeline, llm):
    llm.configure(fault_script=["529"])
    client, _ = client_with_token()
    ticket_id = submit(client, "Hello, where is my new plastic? [[intent:card_arrival]] [[confidence:0.95]]")

    ticket = settled(ticket_id)

    assert ticket.status == Status.RESOLVED
    assert [t.status for t in classify_traces(ticket_id)] == ["ok", "retry", "ok"]
    retry = classify_traces(ticket_id)[1]
    assert "529" in retry.error_message and retry.error_class.endswith("ModelError")


def test_a_low_priority_ticket_goes_through_a_message_batch_at_the_batch_price(pipeline, llm, configure):
    configure(BATCH={"enabled": True, "size": 1, "max_wait_seconds": 15})
    client, _ = client_with_token()
    ticket_id = submit(
        client, "Hi, where is my new plastic? [[intent:card_arrival]] [[confidence:0.96]]", priority=Priority.LOW
    )

    def resolved_after_polling():  # what beat does every few seconds
        batches.batch_poll(AnthropicClient())
        return Ticket.objects.get(pk=ticket_id).status in TERMINAL

    wait_for(resolved_after_polling, timeout=30, interval=0.2, what="the batch result")

    ticket = Ticket.objects.get(pk=ticket_id)
    assert ticket.status == Status.RESOLVED and ticket.intent == "card_arrival"
    # waiting for the batch was not an attempt: no retry row, and the answer came at the first one
    cheap, claude = classify_traces(ticket_id)
    assert claude.status == "ok" and claude.attempt == 1
    assert claude.tier == "claude" and llm.stats()["batches_created"] == 1
    live_price = cost_usd("small", Usage(claude.input_tokens, claude.output_tokens))
    assert float(claude.cost_usd) == pytest.approx(live_price / 2, abs=1e-6)  # traces keep 6 decimals


def test_an_intent_without_a_canned_reply_gets_one_drafted_by_claude(pipeline, llm):
    from agents.intents.catalog import clear_cache
    from agents.models import Intent

    Intent.objects.filter(name="card_arrival").update(reply_template="")
    clear_cache()
    client, _ = client_with_token()
    ticket_id = submit(client, "My card still hasn't arrived")

    ticket = settled(ticket_id)

    assert ticket.status == Status.RESOLVED and ticket.intent == "card_arrival"
    decided = list(Trace.objects.filter(ticket_id=ticket_id, stage="decide").order_by("started_at", "id"))
    assert [t.tier for t in decided] == ["", "claude"]  # handed over, then drafted on the llm queue
    assert decided[1].output_tokens > 0 and decided[1].cost_usd > 0
    assert ticket.reply and ticket.reply == decided[1].output["reply"]
