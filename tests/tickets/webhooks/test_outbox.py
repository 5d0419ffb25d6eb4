"""The outbox's statements match the delivery key, not the status alone (tickets/webhooks/outbox.py)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from tests.factories import ticket_make
from tickets.models import CallbackDelivery, DeliveryStatus, Status, Ticket
from tickets.webhooks import delivery, outbox
from tickets.webhooks.delivery import callbacks_drain


def test_a_replay_that_dead_letters_again_while_the_first_callback_is_in_flight_keeps_its_new_callback(
    db, api, recorder, monkeypatch
):
    _, client = api(callback_url=recorder.url)
    ticket = ticket_make(client, status=Status.DEAD_LETTERED, callback_due_at=timezone.now())
    post = delivery._post

    def post_while_replayed_and_dead_lettered_again(due):
        post(due)
        # A person replays it (its due callback dropped), and it dead-letters again: a new state
        # change into the same status, with a callback of its own, before the first one settles.
        Ticket.objects.filter(pk=ticket.pk).update(status="classifying", callback_due_at=None)
        again = timezone.now() + timedelta(milliseconds=5)
        Ticket.objects.filter(pk=ticket.pk).update(status=Status.DEAD_LETTERED, updated_at=again, callback_due_at=again)

    monkeypatch.setattr(delivery, "_post", post_while_replayed_and_dead_lettered_again)
    assert delivery._deliver(outbox.claim(64, per_client=8)) == 1
    monkeypatch.setattr(delivery, "_post", post)
    assert Ticket.objects.get(pk=ticket.pk).callback_due_at is not None  # the second dead letter is owed

    Ticket.objects.filter(pk=ticket.pk).update(callback_due_at=timezone.now())
    assert callbacks_drain() == 1
    first, second = recorder.json_bodies()
    assert first["event"] == second["event"] == "ticket.dead_lettered"
    keys = [r["headers"]["Idempotency-Key"] for r in recorder.requests]
    assert len(set(keys)) == 2
    assert CallbackDelivery.objects.filter(status=DeliveryStatus.DONE).count() == 2
    assert Ticket.objects.get(pk=ticket.pk).callback_due_at is None


def test_a_failed_callback_of_a_state_the_ticket_has_left_does_not_reschedule_the_new_one(
    db, api, recorder, monkeypatch
):
    _, client = api(callback_url=recorder.url)
    ticket = ticket_make(client, status=Status.DEAD_LETTERED, callback_due_at=timezone.now())
    recorder.statuses = [503]
    post = delivery._post
    again = timezone.now() + timedelta(milliseconds=5)

    def post_then_dead_lettered_again(due):
        post(due)
        Ticket.objects.filter(pk=ticket.pk).update(updated_at=again, callback_due_at=again)

    monkeypatch.setattr(delivery, "_post", post_then_dead_lettered_again)
    assert delivery._deliver(outbox.claim(64, per_client=8)) == 0
    # The first callback's backoff (about 30 s) is not laid over the second's, due now.
    assert Ticket.objects.get(pk=ticket.pk).callback_due_at == again
