"""Message batches: gathered by size or age, submitted, polled, results matched by custom_id."""

from __future__ import annotations

import time
import uuid

import pytest

from agents.intents.claude import ClaudeTier
from agents.llm import batches
from agents.llm.anthropic_client import AnthropicClient
from agents.llm.base import ModelError
from agents.llm.scope import TicketScope


@pytest.fixture
def batching(llm, configure):
    configure(BATCH={"enabled": True, "size": 5, "max_age_seconds": 0.5, "max_wait_seconds": 30})
    return AnthropicClient()


def park(catalog, text: str) -> TicketScope:
    scope = TicketScope(ticket_id=str(uuid.uuid4()), priority=0)
    batches.batch_park(scope, ClaudeTier(AnthropicClient()).request(text, catalog, "small"))
    return scope


def test_requests_wait_for_size_or_age_then_go_as_one_batch_and_come_back_by_custom_id(batching, catalog, llm):
    first = park(catalog, "my card has not arrived [[intent:card_arrival]]")
    second = park(catalog, "what is the euro exchange rate [[intent:exchange_rate]]")
    assert batches.batch_submit(batching) is None  # two of five, and younger than the age limit

    later = time.time() + 0.6  # past the age limit, without waiting for it
    assert batches.batch_submit(batching, now=lambda: later)
    assert batches.batch_result(first.ticket_id) is None  # submitted, not ended yet
    assert batches_polled(batching) == 2  # once the simulator has ended the batch

    results = {s.ticket_id: batches.batch_result(s.ticket_id) for s in (first, second)}
    assert results[first.ticket_id].custom_id == batches.custom_id(first.ticket_id)
    assert '"card_arrival"' in results[first.ticket_id].reply.text
    assert '"exchange_rate"' in results[second.ticket_id].reply.text
    assert llm.stats()["batches_created"] == 1 and llm.stats()["batch_requests"] == 2


def batches_polled(client, *, within: float = 30.0) -> int:
    """`batch_poll` until it collects something: the simulator ends a batch on its own clock, so the
    test waits for the event, not for a guess at how long it takes."""
    deadline = time.monotonic() + within
    while (stored := batches.batch_poll(client)) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    return stored


def test_parking_twice_queues_once_and_a_failed_submit_keeps_the_requests(batching, catalog, llm, monkeypatch):
    scope = park(catalog, "my card has not arrived")
    request = ClaudeTier(AnthropicClient()).request("my card has not arrived", catalog, "small")
    assert batches.batch_park(scope, request) == pytest.approx(time.time() + 30, abs=2)

    def refuse(requests):
        list(requests)
        raise ModelError("batch submit: 529", permanent=False)

    monkeypatch.setattr(batching, "batch_submit", refuse)
    with pytest.raises(ModelError):
        batches.batch_submit(batching, force=True)
    monkeypatch.undo()
    assert batches.batch_submit(batching, force=True)
    assert llm.stats()["batch_requests"] == 1
