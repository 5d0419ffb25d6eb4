"""Delivery: a drain claims the due callbacks a batch at a time and POSTs them on a pool of threads,
each client within its share of the threads and behind its breaker, and settles what came back."""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter, defaultdict
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import datetime, timedelta

import httpx
import prometheus_client
from django.utils import timezone

from project.netguard import OutboundBlocked, lookups_for
from tickets.webhooks import breaker, outbox
from tickets.webhooks.client import http_client
from tickets.webhooks.outbox import Due
from tickets.webhooks.payload import callback_payload
from tickets.webhooks.schedule import cfg, drain_later, max_attempts, retry_delay
from tickets.webhooks.signing import webhook_headers

_log = logging.getLogger(__name__)

CALLBACKS_ABANDONED = prometheus_client.Counter(
    "pipeline_callbacks_abandoned_total",
    "Callbacks given up after the last attempt of the retry schedule, by client id.",
    ["client"],
)
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()
# POSTs in flight per client in this process, across every drain. A client holds at most its share
# of the pool's threads (`per_client_share`), and all clients together never more than the pool has:
# a POST never waits in the pool's queue, where its lease would run on while it waits.
_slots: dict[int, int] = {}
_slots_lock = threading.Lock()
_RETRY_BUSY_SECONDS = 1.0
# How long a slow endpoint may delay the settling (not the sending) of others' callbacks: an endpoint
# that answers one request at a time spreads a batch's answers over tens of milliseconds.
_SETTLE_GRACE_SECONDS = 0.1


def _now() -> datetime:
    return timezone.now()


def per_client_share() -> int:
    """The threads one client's POSTs may hold: CALLBACK_PER_CLIENT, and never more than a quarter
    of the pool, so two (or three) slow clients leave threads for everyone else."""
    pool = max(1, int(cfg("CALLBACK_CONCURRENCY")))
    return max(1, min(int(cfg("CALLBACK_PER_CLIENT")), pool // 4))


def callbacks_drain(*, batch: int | None = None) -> int:
    """Send every callback that is due, a batch at a time; returns how many were delivered."""
    batch = batch or int(cfg("CALLBACK_BATCH_SIZE"))
    per_client = per_client_share()
    sent = 0
    while claimed := outbox.claim(batch, per_client=per_client):
        sent += _deliver(claimed)
        most_of_one_client = max(Counter(due.ticket.client_id for due in claimed).values())
        if len(claimed) < batch and most_of_one_client < per_client:
            # All that was due when it claimed: what settled since has a drain of its own coming
            # (callback_due), rather than this one claiming it a few at a time.
            return sent
    return sent


def _deliver(claimed: list[Due]) -> int:
    settled = [due for due in claimed if not due.url]  # nothing to send
    to_send = []
    for due in outbox.ledger(claimed):
        if due.row_id is None:
            continue  # written by a delivery this statement could not see: its lease brings it back
        (settled if due.done else to_send).append(due)
    outbox.settle(settled, [])
    to_send = _take_slots(_past_breakers(to_send))
    if len(to_send) == 1:
        _post_in_slot(to_send[0])
        return _record([to_send[0]])
    # Settled as they come back, so a slow endpoint holds only its own callbacks (each POST has a
    # deadline over the whole request), never the batch; what has come back by then is settled
    # together, in one statement (a fast endpoint's batch in one or two).
    due_of = {_pool().submit(_post_in_slot, due): due for due in to_send}
    pending, delivered = set(due_of), 0
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        if pending:  # the rest of a fast endpoint's batch is a few milliseconds behind
            more, pending = wait(pending, timeout=_SETTLE_GRACE_SECONDS)
            done |= more
        for future in done:
            future.result()
        delivered += _record([due_of[future] for future in done])
    return delivered


def _past_breakers(dues: list[Due]) -> list[Due]:
    """The dues whose client's breaker is closed, and one probe per half-open client; the others
    wait (not an attempt) until their client's breaker lets the next one through."""
    tripped = breaker.tripped({due.ticket.client_id for due in dues})
    if not tripped:
        return dues
    probe_seconds = float(cfg("WEBHOOK_TIMEOUT_SECONDS")) + outbox.LEASE_MARGIN_SECONDS
    passed, waiting = [], defaultdict(list)
    wait_of: dict[int, float] = {}
    for due in dues:
        client = due.ticket.client_id
        if client not in tripped:
            passed.append(due)
            continue
        if client not in wait_of:
            wait_of[client] = breaker.admit(client, probe_seconds=probe_seconds)
            if wait_of[client] == 0:
                passed.append(due)  # the probe
                wait_of[client] = probe_seconds  # the rest wait for its answer
                continue
        waiting[wait_of[client]].append(due)
    for seconds, held in waiting.items():
        outbox.postpone(held, _now() + timedelta(seconds=seconds))
        drain_later(seconds)
    return passed


def _take_slots(dues: list[Due]) -> list[Due]:
    """The dues whose client has a free slot within its share, while the pool has a thread (each
    taken); the others due again shortly, not an attempt."""
    share, pool = per_client_share(), max(1, int(cfg("CALLBACK_CONCURRENCY")))
    taken, busy = [], []
    with _slots_lock:
        for due in dues:
            client = due.ticket.client_id
            if _slots.get(client, 0) < share and sum(_slots.values()) < pool:
                _slots[client] = _slots.get(client, 0) + 1
                taken.append(due)
            else:
                busy.append(due)
    if busy:
        outbox.postpone(busy, _now() + timedelta(seconds=_RETRY_BUSY_SECONDS))
        drain_later(_RETRY_BUSY_SECONDS)
    return taken


def _post_in_slot(due: Due) -> None:
    try:
        # A POST that could not end (its deadline, then the settling) before its lease does is not
        # started: another drain may claim it once the lease is over, and both would send it.
        deadline = float(cfg("WEBHOOK_TIMEOUT_SECONDS")) + outbox.LEASE_MARGIN_SECONDS
        if _now() + timedelta(seconds=deadline) > due.lease_until:
            due.sent = False
            return
        _post(due)
    finally:
        with _slots_lock:
            _slots[due.ticket.client_id] -= 1


def _post(due: Due) -> None:
    body = json.dumps(callback_payload(due.ticket), separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        **webhook_headers(secret=due.secret, msg_id=due.key, body=body),
        "Idempotency-Key": due.key,
    }
    try:
        # Its name's lookups count against its client only: a tenant whose names never answer holds
        # at most NETGUARD_LOOKUPS_PER_TENANT of the pool's threads in lookups.
        with lookups_for(due.ticket.client_id):
            response = http_client().post(due.url, content=body, headers=headers)
        if not response.is_success:
            due.error = f"callback answered {response.status_code}"
    except OutboundBlocked as exc:
        due.error, due.permanent = f"refused: {exc}", True
    except httpx.HTTPError as exc:
        due.error = f"{type(exc).__name__}: {exc}"


def _record(dues: list[Due]) -> int:
    """Settle the delivered, schedule the failed again, count both in the breakers; how many were
    delivered. What was not sent (its lease ran short) is left due: a drain is on its way."""
    if any(not d.sent for d in dues):
        drain_later(0)
    dues = [d for d in dues if d.sent]
    delivered = [d for d in dues if not d.error]
    outbox.settle(delivered, [d.row_id for d in delivered])
    delays = [delay for due in dues if due.error and (delay := _failed(due)) is not None]
    if delays:  # a drain when the first is due again, and one when the last is (those between go with it)
        drain_later(min(delays))
        drain_later(max(delays))
    opened = breaker.record(
        delivered={d.ticket.client_id for d in delivered},
        failed=[d.ticket.client_id for d in dues if d.error and not d.permanent],
    )
    for client, seconds in opened.items():
        _log.warning("callbacks to client %s held for %.0f s: its endpoint keeps failing", client, seconds)
        outbox.hold_client(client, _now() + timedelta(seconds=seconds))
        drain_later(seconds)
    return len(delivered)


def _failed(due: Due) -> float | None:
    """Counted in the ledger; due again after a backoff (returned), or given up after
    `CALLBACK_MAX_ATTEMPTS`."""
    # The client's series exists from its first failure, at 0: the alert sees the step to 1.
    abandoned = CALLBACKS_ABANDONED.labels(str(due.ticket.client_id))
    attempts = outbox.count_failure(due)
    if attempts is None:
        return None  # a concurrent delivery succeeded
    tickets = outbox.same_key(due)
    if attempts >= max_attempts() or due.permanent:
        _log.warning("callback for %s abandoned after %d attempts: %s", due.key, attempts, due.error)
        if tickets.update(callback_due_at=None):
            abandoned.inc()
        return None
    delay = retry_delay(attempts)
    tickets.update(callback_due_at=_now() + timedelta(seconds=delay))
    return delay


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        with _executor_lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(int(cfg("CALLBACK_CONCURRENCY")), thread_name_prefix="callback")
    return _executor
