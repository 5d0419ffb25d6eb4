"""A hop that meets Postgres away is tried again shortly, not left to the sweeper (5 minutes in
production): the real worker, the real broker, the stage's read failing as a dropped connection does."""

from __future__ import annotations

import pytest
from django.db import OperationalError

from agents.intents import catalog
from agents.pipeline import context
from tests.agents.pipeline.test_pipeline import settled, submit
from tickets.models import Status

pytestmark = pytest.mark.pipeline


def test_a_hop_that_meets_postgres_away_is_tried_again_and_settles(pipeline, api, monkeypatch):
    http, _ = api()
    failures = []
    real = catalog.get_catalog

    def away_twice():
        if len(failures) < 2:
            failures.append(1)
            raise OperationalError("consuming input failed: server closed the connection unexpectedly")
        return real()

    monkeypatch.setattr(context, "get_catalog", away_twice)
    ticket_id = submit(http, body="My card still hasn't arrived, where is it?")

    ticket = settled(ticket_id)  # no sweeper runs here: without the retry it would wait forever

    assert len(failures) == 2
    assert ticket.status == Status.RESOLVED and ticket.intent == "card_arrival"
