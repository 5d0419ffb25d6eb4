"""Fairness per tenant: each active tenant's first hops wait in a lane of their own (not `client %
lanes`), replays and sweeps keep their tenant's lane and share, and a settled ticket leaves its
tenant's count (docs/reliability.md, "One tenant cannot stall the others")."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from agents.models import DeadLetter
from agents.pipeline import dispatch, sweeper, tenants
from agents.pipeline.human import ticket_replay
from agents.pipeline.spec import lane_name
from tests.conftest import wait_for
from tests.factories import ticket_make, ticket_payload
from tickets.api.backpressure import queue_depths
from tickets.models import Client, Status, Ticket


@pytest.fixture
def lanes(settings: Any) -> Any:
    """Eight lanes, empty queues and no tenant counted, before and after."""
    from celery import current_app

    settings.PIPELINE = {**settings.PIPELINE, "LANES": 8}
    current_app.control.purge()
    tenants.reset()
    yield
    current_app.control.purge()
    tenants.reset()


def _clients(*pks: int) -> list[Client]:
    return [Client.objects.create(pk=pk, name=f"tenant-{pk}") for pk in pks]


def _queued() -> dict[str, int]:
    return {queue: n for queue, n in queue_depths().items() if n}


def test_two_active_tenants_never_share_a_lane_while_lanes_are_free(db, lanes):
    a, b = _clients(9000, 9008)  # the same lane under `client % 8`
    for client in (a, b):
        dispatch.stage_enqueue(ticket_make(client).pk, "parse", client_id=client.pk)

    assert tenants.lane(a.pk) != tenants.lane(b.pk)
    assert 0 not in (tenants.lane(a.pk), tenants.lane(b.pk))  # `parse`: the hops published without a tenant
    assert _queued() == {lane_name("parse", tenants.lane(a.pk)): 1, lane_name("parse", tenants.lane(b.pk)): 1}


def test_an_idle_tenants_lane_is_freed_for_the_next(db, lanes):
    tenants.admit(1), tenants.admit(2)
    freed = tenants.lane(1)
    tenants.leave(1)  # its last ticket settled

    assert tenants.admit(3).lane == freed  # the least used lane: the one just freed
    assert tenants.admit(2).lane != freed


def test_a_replay_keeps_its_tenants_lane_and_counts_against_its_share(db, lanes, django_capture_on_commit_callbacks):
    (client,) = _clients(9016)
    ticket = ticket_make(client, status=Status.DEAD_LETTERED)
    DeadLetter.objects.create(ticket=ticket, stage="decide", reason="failed", attempts=3)

    with django_capture_on_commit_callbacks(execute=True):
        ticket_replay(ticket=ticket)

    assert _queued() == {lane_name("parse", tenants.lane(client.pk)): 1}  # not `decide`, not lane 0 for all
    assert tenants.admit(client.pk).in_flight == 2  # the replay, then this one


def test_a_sweep_keeps_its_tenants_lane(db, lanes):
    (client,) = _clients(9024)
    tenants.admit(1)  # someone else holds a lane
    ticket = ticket_make(client, status="classifying")
    Ticket.objects.filter(pk=ticket.pk).update(updated_at=timezone.now() - timedelta(hours=1))

    sweeper.tickets_sweep_stuck(older_than_seconds=60)

    lane = tenants.lane(client.pk)
    assert lane != tenants.lane(1) and _queued() == {lane_name("parse", lane): 1}


@pytest.mark.pipeline
def test_a_settled_ticket_leaves_its_tenants_count_and_the_idle_tenant_its_lane(pipeline, api, lanes):
    http, client = api()
    response = http.post("/api/v1/tickets/", ticket_payload(body="My card still hasn't arrived"), format="json")
    assert response.status_code == 202
    assert tenants.state(client.pk)["in_flight"] == 1  # counted at accept

    wait_for(lambda: Ticket.objects.get(pk=response.json()["id"]).status == Status.RESOLVED, what="resolved")

    wait_for(lambda: tenants.state(client.pk) == {"in_flight": None, "lane": None}, what="its count and lane freed")
