"""Batched callbacks (tickets/webhooks/): Postgres is the outbox, a drain sends what is due.

Drains run in the test process against the real Postgres and an HTTP recorder; the scheduling
(`callback_due`) against the real Redis.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connections
from django.test import TestCase
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.conftest import verified, wait_for
from tests.factories import ticket_make
from tests.tickets.webhooks.drains import drain_until_settled
from tickets.models import CallbackDelivery, DeliveryStatus, Status, Ticket
from tickets.webhooks import breaker, delivery, outbox, schedule
from tickets.webhooks.delivery import callbacks_drain
from tickets.webhooks.payload import callback_key
from tickets.webhooks.resend import callback_resend
from tickets.webhooks.schedule import callback_due


def _settled_tickets(client, n, **fields):
    now = timezone.now()
    return [
        ticket_make(client, status=Status.RESOLVED, reply=f"reply {i}", resolved_at=now, callback_due_at=now, **fields)
        for i in range(n)
    ]


def test_a_drain_sends_every_due_callback_once_signed_and_takes_them_off_the_list(db, api, recorder):
    _, client = api(callback_url=recorder.url)
    tickets = _settled_tickets(client, 5)
    not_due = ticket_make(client, status=Status.RESOLVED, callback_due_at=None)

    assert callbacks_drain(batch=2) == 5  # three batches: 2, 2, 1

    bodies = recorder.json_bodies()
    assert sorted(b["ticket"]["id"] for b in bodies) == sorted(str(t.id) for t in tickets)
    assert {b["event"] for b in bodies} == {"ticket.resolved"}
    for request in recorder.requests:
        assert verified(client.webhook_secret, request)
    assert not Ticket.objects.filter(callback_due_at__isnull=False).exists()
    assert set(CallbackDelivery.objects.values_list("status", "attempts")) == {(DeliveryStatus.DONE, 1)}
    assert str(not_due.id) not in {b["ticket"]["id"] for b in bodies}
    assert callbacks_drain() == 0 and len(recorder.requests) == 5  # nothing is sent twice


def test_a_ticket_without_a_callback_url_is_taken_off_the_list_without_a_call(db, api, recorder):
    _, client = api()
    (ticket,) = _settled_tickets(client, 1)
    assert callbacks_drain() == 0
    ticket.refresh_from_db()
    assert ticket.callback_due_at is None and not recorder.requests
    assert not CallbackDelivery.objects.exists()


def test_a_callback_the_ledger_says_was_delivered_is_taken_off_the_list_without_a_second_call(db, api, recorder):
    _, client = api(callback_url=recorder.url)
    (ticket,) = _settled_tickets(client, 1)
    CallbackDelivery.objects.create(ticket=ticket, idempotency_key=callback_key(ticket), status=DeliveryStatus.DONE)
    assert callbacks_drain() == 0
    assert not recorder.requests and Ticket.objects.get(pk=ticket.pk).callback_due_at is None


def test_a_refused_callback_is_due_again_after_a_backoff_and_given_up_after_the_last_attempt(
    db, api, recorder, settings
):
    settings.PIPELINE = {**settings.PIPELINE, "CALLBACK_MAX_ATTEMPTS": 2, "CALLBACK_RETRY_SCHEDULE": ["30s"]}
    _, client = api(callback_url=recorder.url)
    (ticket,) = _settled_tickets(client, 1)
    recorder.statuses = [503, 503]

    assert callbacks_drain() == 0
    ticket.refresh_from_db()
    row = CallbackDelivery.objects.get()
    assert (row.status, row.attempts, row.last_error) == (DeliveryStatus.FAILED, 1, "callback answered 503")
    assert ticket.callback_due_at > timezone.now() + timedelta(seconds=25)  # 27–33 s: the schedule's first
    assert callbacks_drain() == 0 and len(recorder.requests) == 1  # not due yet: not sent again

    Ticket.objects.filter(pk=ticket.pk).update(callback_due_at=timezone.now())  # the backoff is over
    assert callbacks_drain() == 0
    ticket.refresh_from_db()
    assert ticket.callback_due_at is None and CallbackDelivery.objects.get().attempts == 2  # given up


def test_a_ticket_that_moved_on_while_its_callback_was_in_flight_keeps_the_next_one_due(db, api, recorder, monkeypatch):
    _, client = api(callback_url=recorder.url)
    (ticket,) = _settled_tickets(client, 1, intent="card_arrival")
    Ticket.objects.filter(pk=ticket.pk).update(status=Status.AWAITING_REVIEW)
    post = delivery._post

    def post_then_reviewer_resolves(due):
        post(due)
        Ticket.objects.filter(pk=ticket.pk).update(status=Status.RESOLVED, callback_due_at=timezone.now())

    monkeypatch.setattr(delivery, "_post", post_then_reviewer_resolves)
    assert delivery._deliver(outbox.claim(64, per_client=8)) == 1
    monkeypatch.setattr(delivery, "_post", post)
    ticket.refresh_from_db()
    assert ticket.callback_due_at is not None  # the resolution is still to be told

    callbacks_drain()
    assert [b["event"] for b in recorder.json_bodies()] == ["ticket.awaiting_review", "ticket.resolved"]
    assert Ticket.objects.get(pk=ticket.pk).callback_due_at is None


def test_a_replayed_dead_letter_drops_its_undelivered_callback(db, api, recorder):
    from agents.pipeline.human import ticket_replay

    _, client = api(callback_url=recorder.url)
    ticket = ticket_make(client, status=Status.DEAD_LETTERED, callback_due_at=timezone.now())
    with TestCase.captureOnCommitCallbacks():  # the replay's enqueue is not run
        ticket_replay(ticket=ticket)
    assert callbacks_drain() == 0 and not recorder.requests  # never "ticket.parsing"
    assert Ticket.objects.get(pk=ticket.pk).callback_due_at is None


def test_concurrent_drains_never_send_the_same_callback(transactional_db, api, recorder):
    _, client = api(callback_url=recorder.url)
    tickets = _settled_tickets(client, 60)

    def drain():
        try:
            callbacks_drain(batch=5)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=drain) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # What was not sent stays due, never dropped: a callback the test recorder's connection reset
    # under load ("Connection reset by peer", seen in CI) is counted failed; one whose client had all
    # its slots taken by the other drains waits its turn (not an attempt). Send those now.
    unsent = {str(t.id) for t in tickets} - {json.loads(r["body"])["ticket"]["id"] for r in recorder.requests}
    still_due = Ticket.objects.filter(callback_due_at__isnull=False).values_list("pk", flat=True)
    errors = Counter(CallbackDelivery.objects.values_list("status", "last_error"))
    assert {str(pk) for pk in still_due} == unsent, errors
    # Five such resets in a row open the client's breaker (tickets/webhooks/breaker.py), which would hold
    # the rest for its probe interval: close it, as the probe's success would.
    breaker.record(delivered=[client.pk], failed=[])
    drain_until_settled()

    sent = Counter(json.loads(r["body"])["ticket"]["id"] for r in recorder.requests)
    assert sent == Counter({str(t.id): 1 for t in tickets})


def test_the_first_settled_ticket_of_a_window_schedules_one_drain(db, settings, monkeypatch):
    from project.celery import app

    settings.PIPELINE = {**settings.PIPELINE, "CALLBACK_BATCH_WINDOW_MS": 200}
    sent = []
    monkeypatch.setattr(app, "send_task", lambda name, **kw: sent.append((name, kw)))
    schedule.redis_client().delete(settings.BROKER_KEY_PREFIX + schedule._DRAIN_FLAG)

    for _ in range(5):
        callback_due()
    assert sent == [("agents.deliver_callbacks", {"countdown": 0.2})]
    time.sleep(0.25)  # the window is over: the next settled ticket starts the next drain
    callback_due()
    assert len(sent) == 2


def test_a_settled_ticket_is_never_an_error_when_the_drain_cannot_be_scheduled(db, monkeypatch, caplog):
    import redis

    def down(*args, **kwargs):
        raise redis.ConnectionError("connection refused")

    monkeypatch.setattr(schedule.redis_client(), "set", down)
    callback_due()
    assert "the sweeper will send it" in caplog.text


@pytest.mark.pipeline
def test_callbacks_of_a_burst_arrive_once_each_through_the_worker(pipeline, api, recorder):
    from tests.conftest import wait_for
    from tests.factories import ticket_payload

    http, _ = api(callback_url=recorder.url)
    ids = [http.post("/api/v1/tickets/", ticket_payload(), format="json").json()["id"] for _ in range(8)]
    wait_for(lambda: len(recorder.requests) >= 8, what="eight callbacks")
    time.sleep(0.3)
    assert Counter(b["ticket"]["id"] for b in recorder.json_bodies()) == Counter({i: 1 for i in ids})
    assert not Ticket.objects.filter(callback_due_at__isnull=False).exists()


def test_by_default_a_refused_callback_is_tried_for_about_three_days(settings):
    steps = settings.PIPELINE["CALLBACK_RETRY_SCHEDULE"]
    assert schedule.max_attempts() == len(steps) + 1 == 12
    assert sum(schedule.seconds(step) for step in steps) >= 3 * 86400
    assert 27 <= schedule.retry_delay(1) <= 33  # the first, ±10 %
    assert 21.6 * 3600 <= schedule.retry_delay(40) <= 26.4 * 3600  # past the end: the last repeats


def test_an_abandoned_callback_is_counted_and_can_be_resent_under_the_same_key(db, api, recorder, settings):
    from tickets.webhooks.delivery import CALLBACKS_ABANDONED

    settings.PIPELINE = {**settings.PIPELINE, "CALLBACK_MAX_ATTEMPTS": 1}
    _, client = api(callback_url=recorder.url)
    (ticket,) = _settled_tickets(client, 1)
    abandoned = CALLBACKS_ABANDONED.labels(str(client.pk))
    before = abandoned._value.get()
    recorder.statuses = [503]

    assert callbacks_drain() == 0
    ticket.refresh_from_db()
    assert ticket.callback_due_at is None  # abandoned
    assert abandoned._value.get() == before + 1

    assert callback_resend(ticket=ticket)
    assert callbacks_drain() == 1
    first, again = recorder.requests
    assert again["headers"]["Idempotency-Key"] == first["headers"]["Idempotency-Key"]  # the same event
    ticket.refresh_from_db()
    assert ticket.callback_due_at is None and CallbackDelivery.objects.get().status == DeliveryStatus.DONE


def test_each_move_into_a_terminal_state_gets_a_callback_of_its_own(db, api, recorder):
    # A replayed dead letter that dead-letters again is a new state change: before, its key was the
    # same as the first dead letter's and the ledger marked it delivered without a POST.
    _, client = api(callback_url=recorder.url)
    ticket = ticket_make(client, status=Status.DEAD_LETTERED, callback_due_at=timezone.now())
    assert callbacks_drain() == 1
    later = timezone.now() + timedelta(seconds=1)  # replayed, and dead-lettered again
    Ticket.objects.filter(pk=ticket.pk).update(updated_at=later, callback_due_at=timezone.now())

    assert callbacks_drain() == 1
    first, second = recorder.requests
    assert first["headers"]["Idempotency-Key"] != second["headers"]["Idempotency-Key"]
    assert CallbackDelivery.objects.filter(status=DeliveryStatus.DONE).count() == 2


def test_one_clients_backlog_never_fills_a_drain_batch(db, api, recorder, settings):
    settings.PIPELINE = {**settings.PIPELINE, "CALLBACK_PER_CLIENT": 3}
    _, flood = api("flood", callback_url=recorder.url)
    _, quiet = api("quiet", callback_url=recorder.url)
    _settled_tickets(flood, 20)
    _settled_tickets(quiet, 2)

    claimed = outbox.claim(10, per_client=delivery.per_client_share())

    by_client = Counter(due.ticket.client_id for due in claimed)
    assert by_client == {flood.pk: 3, quiet.pk: 2}


def test_a_slow_endpoint_delays_only_its_own_client(transactional_db, api, recorder_factory, settings):
    settings.PIPELINE = {**settings.PIPELINE, "CALLBACK_CONCURRENCY": 16}
    slow, fast = recorder_factory(), recorder_factory()
    slow.delay = 3.0
    _, slow_client = api("slow", callback_url=slow.url)
    _, fast_client = api("fast", callback_url=fast.url)
    slow_tickets = _settled_tickets(slow_client, 2)
    fast_tickets = _settled_tickets(fast_client, 4)

    drain = threading.Thread(target=lambda: (callbacks_drain(), connections.close_all()))
    started = time.monotonic()
    drain.start()
    wait_for(
        lambda: not Ticket.objects.filter(pk__in=[t.pk for t in fast_tickets], callback_due_at__isnull=False).exists(),
        timeout=10,
        what="the fast client's callbacks to be delivered and settled",
    )
    fast_settled_after = time.monotonic() - started
    drain.join(timeout=30)

    assert fast_settled_after < slow.delay  # settled while the slow client's POSTs were still open
    assert len(fast.requests) == 4 and len(slow.requests) == 2
    assert not Ticket.objects.filter(pk__in=[t.pk for t in slow_tickets], callback_due_at__isnull=False).exists()


def test_a_callback_into_the_operators_network_is_refused_at_delivery_and_abandoned(db, api, recorder, settings):
    # The URL was stored before (or passed the check at submit and its name now points inside):
    # the delivery guard refuses it before any connection, and no later attempt could succeed.
    _, client = api(callback_url="http://169.254.169.254/latest/meta-data/")
    (ticket,) = _settled_tickets(client, 1)

    assert callbacks_drain() == 0

    ticket.refresh_from_db()
    row = CallbackDelivery.objects.get()
    assert ticket.callback_due_at is None and row.attempts == 1
    assert row.status == DeliveryStatus.FAILED and row.last_error.startswith("refused:")


def test_concurrent_drains_hold_at_most_a_clients_share_of_the_pool(
    transactional_db, api, recorder_factory, settings, monkeypatch
):
    settings.PIPELINE = {**settings.PIPELINE, "CALLBACK_PER_CLIENT": 2, "CALLBACK_CONCURRENCY": 8}
    monkeypatch.setattr(delivery, "drain_later", lambda delay: None)  # the test drains itself
    slow, fast = recorder_factory(), recorder_factory()
    slow.delay = 1.0
    _, slow_client = api("slow", callback_url=slow.url)
    _, fast_client = api("fast", callback_url=fast.url)
    _settled_tickets(slow_client, 12)
    fast_tickets = _settled_tickets(fast_client, 3)

    drains = [threading.Thread(target=lambda: (callbacks_drain(batch=4), connections.close_all())) for _ in range(4)]
    for drain in drains:
        drain.start()
    wait_for(
        lambda: not Ticket.objects.filter(pk__in=[t.pk for t in fast_tickets], callback_due_at__isnull=False).exists(),
        timeout=10,
        what="the fast client's callbacks",
    )
    for drain in drains:
        drain.join(timeout=30)

    assert slow.most_at_once <= 2  # four drains, yet never more than the client's share at once
    assert len(fast.requests) == 3


def test_a_batch_costs_three_statements_whatever_its_size(db, api, recorder, settings):
    """Claim, ledger, settle: a batch's callbacks are never read or settled one by one (the claim
    brings the client each POST's slot is counted against; what comes back together is settled
    together). 13 due for one client: two batches (the per-client cap is 8), and no third claim —
    the second took less than the cap, so it took all that was due."""
    settings.PIPELINE = {**settings.PIPELINE, "CALLBACK_PER_CLIENT": 8}
    _, client = api(callback_url=recorder.url)
    _settled_tickets(client, 13)

    with CaptureQueriesContext(connections["default"]) as queries:
        assert callbacks_drain() == 13

    kinds = Counter(_statement_kind(q["sql"]) for q in queries.captured_queries)
    assert set(kinds) == {"claim", "ledger", "settle"}, kinds  # nothing read or written one by one
    assert kinds["claim"] == 2 and kinds["ledger"] == 2, kinds
    assert kinds["settle"] < 13, kinds  # what comes back together is settled together (two, unloaded)


def _statement_kind(sql: str) -> str:
    for kind, start in (("claim", "WITH candidates"), ("ledger", "WITH new"), ("settle", "WITH done")):
        if sql.startswith(start):
            return kind
    return sql[:60]


def test_two_slow_clients_never_hold_the_whole_pool(transactional_db, api, recorder_factory, settings, monkeypatch):
    # Each may have CALLBACK_PER_CLIENT = 4 of the 8 threads configured; each is held to its share.
    settings.PIPELINE = {**settings.PIPELINE, "CALLBACK_PER_CLIENT": 4, "CALLBACK_CONCURRENCY": 8}
    monkeypatch.setattr(delivery, "_executor", ThreadPoolExecutor(8, thread_name_prefix="callback-test"))
    monkeypatch.setattr(delivery, "drain_later", lambda delay: None)  # the test drains itself
    slow_a, slow_b = recorder_factory(), recorder_factory()
    slow_a.delay = slow_b.delay = 1.0
    for name, rec in (("slow-a", slow_a), ("slow-b", slow_b)):
        _, client = api(name, callback_url=rec.url)
        _settled_tickets(client, 8)

    drains = [threading.Thread(target=lambda: (callbacks_drain(batch=4), connections.close_all())) for _ in range(4)]
    for drain in drains:
        drain.start()
    for drain in drains:
        drain.join(timeout=30)

    assert slow_a.requests and slow_b.requests
    assert slow_a.most_at_once + slow_b.most_at_once < 8  # threads were left for every other client
    delivery._executor.shutdown(wait=True)


def test_a_post_that_waited_past_its_lease_is_not_sent_a_second_time(
    transactional_db, api, recorder, settings, monkeypatch
):
    """Another drain claims a callback whose lease ran out; the first drain's POST of it, still
    waiting for a thread, must not go too."""
    settings.PIPELINE = {**settings.PIPELINE, "CALLBACK_CONCURRENCY": 8}
    pool = ThreadPoolExecutor(8, thread_name_prefix="callback-test")
    monkeypatch.setattr(delivery, "_executor", pool)
    monkeypatch.setattr(delivery, "drain_later", lambda delay: None)
    tickets = [_settled_tickets(api(f"c{i}", callback_url=recorder.url)[1], 1)[0] for i in range(2)]
    release = threading.Event()
    for _ in range(8):  # every thread busy (POSTs of other drains)
        pool.submit(release.wait, 30)

    first = threading.Thread(
        target=lambda: (delivery._deliver(outbox.claim(64, per_client=8)), connections.close_all())
    )
    first.start()
    wait_for(lambda: pool._work_queue.qsize() >= 2, what="the first drain's two POSTs queued")
    # Its lease runs out while they wait: the callbacks are due again, and another drain sends them.
    Ticket.objects.update(callback_due_at=timezone.now())
    assert callbacks_drain(batch=1) == 2
    later = timezone.now() + timedelta(hours=1)
    monkeypatch.setattr(delivery, "_now", lambda: later)  # the first drain's POSTs get a thread only now
    release.set()
    first.join(timeout=30)
    pool.shutdown(wait=True)

    sent = Counter(body["ticket"]["id"] for body in recorder.json_bodies())
    assert sent == Counter({str(t.id): 1 for t in tickets})
    assert not Ticket.objects.filter(callback_due_at__isnull=False).exists()


def test_a_clients_abandoned_counter_is_exported_at_0_from_its_first_failed_attempt(db, api, recorder, settings):
    """So the alert's `increase()` sees its step to 1 when the first callback is abandoned."""
    from prometheus_client import REGISTRY

    settings.PIPELINE = {**settings.PIPELINE, "CALLBACK_MAX_ATTEMPTS": 3}
    _, client = api(callback_url=recorder.url)
    _settled_tickets(client, 1)
    recorder.statuses = [503]
    sample = {"client": str(client.pk)}
    assert REGISTRY.get_sample_value("pipeline_callbacks_abandoned_total", sample) is None

    assert callbacks_drain() == 0  # failed, due again: not abandoned

    assert REGISTRY.get_sample_value("pipeline_callbacks_abandoned_total", sample) == 0.0
