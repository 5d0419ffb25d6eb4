"""The fault suite's callback rows (#24), on the real Celery worker, Redis and Postgres:

- a tenant whose endpoint never answers, with 5,000 callbacks due: another tenant's callbacks are
  all delivered, the dead endpoint costs a share of POSTs and then a probe (its breaker), and the
  drain tasks stay few (no spin);
- a replay racing its own callback: the first dead letter's callback is in flight when the replay
  dead-letters again; both callbacks arrive, once each (0 lost, 0 duplicated).

Short enough for `make test` (the endpoint's deadline is half a second here).
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from celery.signals import task_prerun
from django.utils import timezone

from agents.models import Intent
from tests.conftest import wait_for
from tests.factories import ticket_payload
from tests.tickets.webhooks.test_breaker import Silent
from tickets.models import CallbackDelivery, Status, Ticket
from tickets.webhooks import callback_due
from tickets.webhooks import client as webhook_client
from tickets.webhooks.schedule import DRAIN_TASK

pytestmark = [pytest.mark.pipeline, pytest.mark.reliability]


@pytest.fixture
def drains():
    """How many drain tasks the worker ran."""
    ran = Counter()
    lock = threading.Lock()

    def count(sender=None, **_):
        if sender is not None and sender.name == DRAIN_TASK:
            with lock:
                ran["drains"] += 1

    task_prerun.connect(count, weak=False)
    yield ran
    task_prerun.disconnect(count)


def _due(client, n):
    now = timezone.now()
    Ticket.objects.bulk_create(
        Ticket(client=client, body="b", status=Status.RESOLVED, resolved_at=now, callback_due_at=now) for _ in range(n)
    )


def test_a_tenant_whose_endpoint_never_answers_with_5000_callbacks_due(
    pipeline, api, recorder, settings, drains, monkeypatch
):
    monkeypatch.setattr(webhook_client, "_clients", {})  # clients with this test's deadline, dropped after it
    settings.PIPELINE = {
        **settings.PIPELINE,
        "WEBHOOK_TIMEOUT_SECONDS": 0.5,
        "CALLBACK_BREAKER_FAILURES": 5,
        "CALLBACK_BREAKER_OPEN_SECONDS": 60.0,
    }
    silent = Silent()
    try:
        _, dead = api("dead", callback_url=silent.url)
        _, live = api("live", callback_url=recorder.url)
        _due(dead, 5000)
        _due(live, 100)
        callback_due()

        wait_for(lambda: len(recorder.requests) >= 100, timeout=60, what="the other tenant's callbacks")
        wait_for(
            lambda: not Ticket.objects.filter(client=live).exclude(callback_due_at=None).exists(),
            what="the other tenant's callbacks settled",
        )
    finally:
        silent.close()

    told = Counter(body["ticket"]["id"] for body in recorder.json_bodies())
    assert len(told) == 100 and set(told.values()) == {1}  # all delivered, none twice
    share = settings.PIPELINE["CALLBACK_PER_CLIENT"]
    assert silent.accepted <= 2 * share  # one share of POSTs timed out, then its breaker held the rest
    assert CallbackDelivery.objects.filter(ticket__client=dead).count() == silent.accepted  # no other attempt
    assert Ticket.objects.filter(client=dead).exclude(callback_due_at=None).count() == 5000  # held, never dropped
    assert drains["drains"] <= 10, drains  # no spin: a few drains, not one per busy or failed callback


def test_a_replay_racing_its_own_callback_loses_and_duplicates_nothing(pipeline, api, recorder_factory, settings):
    # A drain starts 2 s after a ticket settles: the first callback settles before the second
    # dead letter's drain claims its callback (the window in which a settle on the status alone
    # cleared it).
    settings.PIPELINE = {**settings.PIPELINE, "CALLBACK_BATCH_WINDOW_MS": 2000}
    callbacks, downstream = recorder_factory(), recorder_factory()
    callbacks.delay = 1.0  # the first dead letter's callback is in flight while the replay runs
    downstream.statuses = [422] * 10  # the intent's downstream refuses: each run dead-letters at once
    Intent.objects.filter(name="lost_or_stolen_card").update(webhook_url=downstream.url)
    http, _ = api(callback_url=callbacks.url)
    ticket_id = http.post("/api/v1/tickets/", ticket_payload(body="I lost my card"), format="json").json()["id"]
    wait_for(lambda: Ticket.objects.get(pk=ticket_id).status == Status.DEAD_LETTERED, what="the first dead letter")
    wait_for(lambda: callbacks.in_flight == 1, what="its callback in flight")

    assert http.post(f"/api/v1/tickets/{ticket_id}/replay/").status_code == 202
    wait_for(lambda: len(downstream.requests) == 2, what="the replay's run")
    wait_for(lambda: len(callbacks.requests) >= 2, timeout=30, what="both dead letters' callbacks")

    def settled():
        ticket = Ticket.objects.get(pk=ticket_id)
        return ticket.callback_due_at is None, (ticket.status, ticket.updated_at, ticket.callback_due_at)

    wait_for(lambda: settled()[0], what="the callbacks settled")

    keys = Counter(r["headers"]["Idempotency-Key"] for r in callbacks.requests)
    assert len(keys) == 2 and set(keys.values()) == {1}  # 0 lost, 0 duplicated
    assert [b["event"] for b in callbacks.json_bodies()] == ["ticket.dead_lettered"] * 2
    assert CallbackDelivery.objects.filter(ticket_id=ticket_id, status="done").count() == 2


# --- the heavier variant: the whole system as processes, at production settings ------------------

_DUE_SQL = (
    "INSERT INTO tickets_ticket (id, client_id, request_hash, customer_ref, channel, subject, body, metadata,"
    " priority, callback_url, status, stage_attempts, intent, action, reply, context, cost_usd, created_at,"
    " updated_at, resolved_at, callback_due_at)"
    " SELECT gen_random_uuid(), %s, '', '', 'api', '', 'b', '{}', 1, '', 'resolved', 0, '', '', '', '{}', 0,"
    " now(), now() - g * interval '1 microsecond', now(), now() - interval '10 minutes'"
    " FROM generate_series(1, %s) AS g"
)


@pytest.mark.faults_production
def test_production_a_tenant_whose_endpoint_never_answers_with_5000_callbacks_due(production_system):
    """The io worker's own processes and production's deadlines (10 s a POST, the sweeper's 30 s):
    callbacks overdue since before the sweeper's cutoff, 5,000 to an endpoint that never answers
    (the recorder's trickle path: a byte every 2 s), 100 to another tenant's."""
    system = production_system
    dead = system.client_create("production: callbacks never answered", callbacks=False)
    system.sql(
        "UPDATE tickets_client SET callback_url = %s WHERE id = %s",
        f"{system.callbacks.base_url}/trickle/dead",
        dead.id,
    )
    live = system.client_create("production: callbacks beside it")
    system.sql(_DUE_SQL, dead.id, 5000)
    system.sql(_DUE_SQL, live.id, 100)
    live_ids = {row[0] for row in system.sql("SELECT id::text FROM tickets_ticket WHERE client_id = %s", live.id)}

    def told() -> set[str]:
        return {r.body.get("ticket", {}).get("id") for r in system.callbacks.snapshot() if r.applied} & live_ids

    wait_for(lambda: len(told()) == 100, timeout=180, interval=1, what="the other tenant's 100 callbacks")
    dead_posts = [r for r in system.callbacks.snapshot() if r.path.startswith("/trickle/dead")]
    (still_due,) = system.sql(
        "SELECT count(*) FROM tickets_ticket WHERE client_id = %s AND callback_due_at IS NOT NULL", dead.id
    )
    assert len(dead_posts) <= 3 * 8, len(dead_posts)  # a share, then a probe a period: not thousands
    assert still_due[0] == 5000  # held, none dropped
