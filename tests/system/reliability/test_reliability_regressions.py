"""Bugs the fault suite found, pinned in small tests (in-process worker, real broker and Postgres)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from kombu.exceptions import OperationalError

from agents.models import DeadLetter, Intent
from tests.conftest import wait_for
from tests.factories import ticket_payload
from tickets.models import Status, Ticket

pytestmark = [pytest.mark.pipeline, pytest.mark.reliability]


def test_a_ticket_waiting_for_its_customers_older_request_is_not_swept_as_stuck(pipeline, api, settings):
    # Each sweep of a waiting ticket started one more wait loop (each re-checking every
    # CUSTOMER_WAIT_SECONDS, forever): under load the decide queue grew without bound.
    settings.PIPELINE = {**settings.PIPELINE, "CUSTOMER_WAIT_SECONDS": 0.2}
    http, client = api()
    Ticket.objects.create(client=client, customer_ref="zoe", body="first", status="escalating")
    response = http.post("/api/v1/tickets/", ticket_payload(customer_ref="zoe"), format="json")
    newer = response.json()["id"]
    wait_for(lambda: Ticket.objects.get(pk=newer).status == "deciding", what="the newer ticket to wait")
    time.sleep(1.5)

    waiting = Ticket.objects.get(pk=newer)
    assert waiting.status == "deciding"
    assert (time.time() - waiting.updated_at.timestamp()) < 1.0, "a live wait loop looks stuck to the sweeper"


def test_a_downstream_refusal_dead_letters_at_once_as_a_permanent_error(pipeline, api, recorder):
    # LedgerTools reports `permanent` for a 4xx, but the execute stage raised StageError without it,
    # so a refusal was retried MAX_ATTEMPTS times and dead-lettered as "out of retries".
    Intent.objects.filter(name="lost_or_stolen_card").update(webhook_url=recorder.url)
    recorder.statuses = [422] * 10
    http, _ = api()
    ticket_id = http.post("/api/v1/tickets/", ticket_payload(body="I lost my card"), format="json").json()["id"]

    wait_for(lambda: Ticket.objects.get(pk=ticket_id).status == Status.DEAD_LETTERED, what="the dead letter")

    letter = DeadLetter.objects.get(ticket_id=ticket_id)
    assert (letter.reason, letter.attempts, len(recorder.requests)) == ("permanent error", 1, 1)


def test_a_request_stored_while_the_broker_is_down_is_accepted_and_left_to_the_sweeper(
    transactional_db, api, monkeypatch
):
    # The ticket is committed to Postgres (the system of record) and the sweeper will start it; a
    # 500 tells the client it was not accepted, and a retry without an Idempotency-Key makes a
    # second ticket, answered twice. Seen in the fault suite's "Redis restarted" row.
    from project.celery import app

    def broker_down(*args: object, **kwargs: object) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(app, "send_task", broker_down)
    http, _ = api()

    response = http.post("/api/v1/tickets/", ticket_payload(), format="json")

    assert response.status_code == 202
    assert Ticket.objects.get().status == Status.RECEIVED


def test_a_callback_whose_message_was_lost_is_sent_by_the_sweeper(pipeline, api, recorder):
    from agents.pipeline import sweeper

    _, client = api(callback_url=recorder.url)
    long_ago = timezone.now() - timedelta(minutes=10)
    lost = Ticket.objects.create(client=client, body="hello", status=Status.RESOLVED, reply="done")
    told = Ticket.objects.create(client=client, body="hi", status=Status.RESOLVED, reply="done")
    # `lost` became terminal ten minutes ago and its callback never went; `told`'s was delivered.
    Ticket.objects.filter(pk=lost.pk).update(callback_due_at=long_ago, updated_at=long_ago)
    Ticket.objects.filter(pk=told.pk).update(callback_due_at=None, updated_at=long_ago)

    sweeper.tickets_sweep_stuck(older_than_seconds=60)

    wait_for(lambda: recorder.requests, timeout=5, what="the callback")
    wait_for(lambda: Ticket.objects.get(pk=lost.pk).callback_due_at is None, timeout=5, what="the callback settled")
    assert [body["ticket"]["id"] for body in recorder.json_bodies()] == [str(lost.pk)]


def test_the_callback_sweep_reads_only_the_callbacks_still_due(db):
    from agents.pipeline import sweeper

    with CaptureQueriesContext(connection) as queries:
        sweeper.callbacks_sweep_lost(cutoff=timezone.now())
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # an empty test table is cheaper to scan
        cursor.execute("EXPLAIN " + queries[0]["sql"])
        plan = " ".join(row[0] for row in cursor.fetchall())
    assert "ticket_callback_due" in plan, plan  # the partial index applies: cost does not grow with the table


def test_an_outage_of_the_system_of_record_is_a_503_with_retry_after(db, api, monkeypatch):
    from django.db import OperationalError as DatabaseDown

    def postgres_down(**kwargs: object) -> None:
        raise DatabaseDown('connection to server on socket "/var/pg/.s.PGSQL.5432" failed: No such file')

    monkeypatch.setattr("tickets.api.views.ticket_submit", postgres_down)
    http, _ = api()
    http.raise_request_exception = False

    response = http.post("/api/v1/tickets/", ticket_payload(), format="json")

    assert response.status_code == 503 and response.headers.get("Retry-After")
