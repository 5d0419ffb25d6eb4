"""A client whose endpoint never answers is left alone by its breaker (tickets/webhooks/breaker.py):
its callbacks wait in Postgres, not in the threads, and no drain spins on them."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from project.redisconn import redis_client
from tests.factories import ticket_make
from tests.tickets.webhooks.drains import drain_until_settled
from tickets.models import CallbackDelivery, Client, Status, Ticket
from tickets.webhooks import breaker, schedule
from tickets.webhooks import client as webhook_client
from tickets.webhooks.delivery import callbacks_drain


class Silent:
    """An endpoint that accepts every connection and never answers: each POST times out."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.accepted = 0
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def silent():
    endpoint = Silent()
    yield endpoint
    endpoint.close()


def _due(client, n):
    now = timezone.now()
    return [ticket_make(client, status=Status.RESOLVED, resolved_at=now, callback_due_at=now) for _ in range(n)]


def _reopen_now(client):
    """As if the breaker's open period had passed: its hold gone, the client's callbacks due."""
    redis_client().delete(breaker._hold_key(client.pk))
    Ticket.objects.filter(client=client).exclude(callback_due_at=None).update(callback_due_at=timezone.now())


def test_an_endpoint_that_never_answers_costs_one_share_of_posts_then_a_probe_and_others_are_delivered(
    db, api, recorder_factory, silent, settings, monkeypatch
):
    settings.PIPELINE = {
        **settings.PIPELINE,
        "WEBHOOK_TIMEOUT_SECONDS": 0.5,
        "CALLBACK_PER_CLIENT": 8,
        "CALLBACK_CONCURRENCY": 32,
        "CALLBACK_BREAKER_FAILURES": 3,
        "CALLBACK_BREAKER_OPEN_SECONDS": 60.0,
    }
    monkeypatch.setattr(webhook_client, "_clients", {})  # clients with this test's deadline, dropped after it
    drains = []
    monkeypatch.setattr(schedule, "drain_schedule", lambda countdown=None: drains.append(countdown))
    live = recorder_factory()
    _, dead_client = api("dead", callback_url=silent.url)
    _, live_client = api("live", callback_url=live.url)
    _due(dead_client, 40)
    _due(live_client, 5)

    callbacks_drain()
    callbacks_drain()  # a second drain (the scheduled ones) finds the dead client's callbacks held

    assert len(live.requests) == 5  # the other tenant's callbacks all delivered
    assert silent.accepted <= 8  # one share of POSTs timed out, then the breaker opened: not 40
    soon = timezone.now() + timedelta(seconds=30)
    assert not Ticket.objects.filter(client=dead_client, callback_due_at__lt=soon).exists()  # all held
    assert CallbackDelivery.objects.filter(ticket__client=dead_client).count() == silent.accepted  # no attempt spent
    # No spin: a drain when the failed ones are due again (first and last) and one when the hold ends,
    # not a drain per callback.
    assert len(drains) <= 3, drains

    # Half-open: one probe, the others wait for its answer; it fails, so the breaker opens again.
    posted = silent.accepted
    _reopen_now(dead_client)
    callbacks_drain()
    assert silent.accepted == posted + 1
    assert not Ticket.objects.filter(client=dead_client, callback_due_at__lt=timezone.now()).exists()

    # The endpoint is fixed: the probe goes through and closes the breaker, so the next batches flow
    # (the probe's batch-mates, put off for its answer, come next); every callback arrives once.
    healed = recorder_factory()
    Client.objects.filter(pk=dead_client.pk).update(callback_url=healed.url)
    _reopen_now(dead_client)
    callbacks_drain()
    assert 1 <= len(healed.requests) < 40
    drain_until_settled()
    told = Counter(body["ticket"]["id"] for body in healed.json_bodies())
    assert len(told) == 40 and set(told.values()) == {1}
    assert not Ticket.objects.filter(client=dead_client).exclude(callback_due_at=None).exists()
    assert redis_client().get(f"{django_settings.BROKER_KEY_PREFIX}callbacks:failures:{dead_client.pk}") is None
