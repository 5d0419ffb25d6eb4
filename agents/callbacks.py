"""Signed callbacks to the client when a ticket reaches a terminal state."""

from __future__ import annotations

import json
import logging
import random
import threading
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import prometheus_client
from celery import current_app
from django.conf import settings
from django.db import connection
from django.utils import timezone

from agents.models import LedgerStatus, SideEffect
from agents.tools import http_client
from project.netguard import OutboundBlocked
from project.redisconn import redis_client
from tickets.models import TERMINAL, Client, Ticket
from tickets.webhooks import callback_payload, webhook_headers

_log = logging.getLogger(__name__)

CALLBACKS_ABANDONED = prometheus_client.Counter(
    "pipeline_callbacks_abandoned_total",
    "Callbacks given up after the last attempt of the retry schedule, by client id.",
    ["client"],
)


# --- batched delivery ---------------------------------------------------------------------------
# The terminal write sets `Ticket.callback_due_at` in the same statement as the state (Postgres is
# the outbox). After the commit, `callback_due` makes sure a drain runs within the batching window:
# the first terminal ticket of a window sets a short-lived flag in Redis and schedules one
# `agents.deliver_callbacks` task; the others of the window only find the flag. A drain claims the
# due rows a batch at a time (moving `callback_due_at` to a lease, with SKIP LOCKED, so concurrent
# drains never share a row), POSTs each callback, and clears what was delivered in one statement.
# A failed POST is due again after a backoff; a drain killed mid-batch leaves its rows to come
# back when the lease ends; a drain never scheduled (Redis away) is the sweeper's to start. Under
# load one Celery task carries many callbacks; at one ticket a second it is one task a ticket, as
# before.
_DRAIN_FLAG = "callbacks:drain"
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _cfg(name: str) -> Any:
    return settings.PIPELINE[name]


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(spec: str) -> float:
    """'30s', '2m', '1h', '1d' or plain seconds."""
    spec = spec.strip().lower()
    return float(spec[:-1]) * _UNITS[spec[-1]] if spec[-1:] in _UNITS else float(spec)


def max_attempts() -> int:
    """Attempts before a callback is abandoned: CALLBACK_MAX_ATTEMPTS, else one more than the schedule."""
    return int(_cfg("CALLBACK_MAX_ATTEMPTS")) or len(_cfg("CALLBACK_RETRY_SCHEDULE")) + 1


def retry_delay(attempts: int) -> float:
    """How long after its `attempts`-th failure a callback is due again: the schedule's entry (the
    last one repeats), ±10 % so a client's backlog does not come back all at once."""
    schedule = _cfg("CALLBACK_RETRY_SCHEDULE") or ["30s"]
    base = _seconds(schedule[min(attempts, len(schedule)) - 1])
    return base * random.uniform(0.9, 1.1)


def callback_due() -> None:
    """After a terminal commit: a drain runs within `CALLBACK_BATCH_WINDOW_MS` (one Redis round trip
    for all but the first ticket of a window). Never raises: the sweeper covers a missed drain."""
    window = max(1, int(_cfg("CALLBACK_BATCH_WINDOW_MS")))
    try:
        if redis_client().set(settings.BROKER_KEY_PREFIX + _DRAIN_FLAG, b"1", nx=True, px=window):
            drain_schedule(countdown=window / 1000)
    except Exception as exc:  # Redis or the broker away: the ticket's callback_due_at stays set
        _log.warning("callback drain not scheduled (the sweeper will send it): %s", exc)


def callback_resend(*, ticket: Ticket) -> bool:
    """Send the settled ticket's callback again (an abandoned one, or one the client lost), under the
    same delivery key — the client can tell it is the same event — with a fresh retry schedule.
    False when the ticket is not settled (its callback comes when it is)."""
    ticket = Ticket.objects.get(pk=ticket.pk)
    if ticket.status not in TERMINAL:
        return False
    SideEffect.objects.filter(idempotency_key=callback_key(ticket)).update(
        status=LedgerStatus.STARTED, attempts=0, last_error="", finished_at=None
    )
    Ticket.objects.filter(pk=ticket.pk, status=ticket.status).update(callback_due_at=timezone.now())
    drain_schedule()
    return True


def drain_schedule(countdown: float | None = None) -> None:
    """Start a drain (the sweeper, a failed callback's backoff, a replay by hand)."""
    current_app.send_task("agents.deliver_callbacks", countdown=countdown)


_PAYLOAD_FIELDS = {  # and the client, whose slots a POST takes (deferred, it would cost a query each)
    *("id", "client", "status", "idempotency_key", "customer_ref", "intent", "confidence", "action", "reply"),
    *("resolved_at", "callback_url", "updated_at"),
}
# In the model's order: `Model.from_db` maps a partial row by it.
_CLAIM_FIELDS = [f.name for f in Ticket._meta.concrete_fields if f.name in _PAYLOAD_FIELDS]
_CLAIM_ATTNAMES = [Ticket._meta.get_field(n).attname for n in _CLAIM_FIELDS]
_T, _C = Ticket._meta, Client._meta


def _col(model_meta: Any, name: str) -> str:
    return model_meta.get_field(name).column


_RETURNING = ", ".join(f't."{_col(_T, n)}"' for n in _CLAIM_FIELDS)
# The oldest due callbacks, at most `per_client` of any one client (a slow or flooded client's
# backlog never fills a batch), moved to a lease so concurrent drains never share a row.
_CLIENT_COL = _col(_T, "client")
_CLAIM_SQL = (
    f'WITH candidates AS (SELECT "id", "{_CLIENT_COL}" AS client, "callback_due_at" AS due_at '
    f'FROM "{_T.db_table}" WHERE "callback_due_at" <= %s ORDER BY "callback_due_at" LIMIT %s FOR UPDATE SKIP LOCKED), '
    'chosen AS (SELECT "id" FROM (SELECT "id", due_at, row_number() OVER (PARTITION BY client ORDER BY due_at) AS n '
    "FROM candidates) ranked WHERE n <= %s ORDER BY due_at LIMIT %s) "
    f'UPDATE "{_T.db_table}" AS t SET "callback_due_at" = %s FROM chosen, "{_C.db_table}" AS c '
    f'WHERE t."id" = chosen."id" AND c."id" = t."{_CLIENT_COL}" '
    f'RETURNING {_RETURNING}, c."callback_url", c."webhook_secret"'
)
# Delivered (or nothing to send): the ledger rows done and the tickets off the list, in one
# statement; a ticket that has moved to another terminal state since keeps its due callback.
_SETTLE_SQL = (
    f'WITH done AS (UPDATE "{SideEffect._meta.db_table}" SET "attempts" = "attempts" + 1, "status" = %s, '
    f'"finished_at" = %s WHERE "id" = ANY(%s) AND "status" <> %s RETURNING "id") '
    f'UPDATE "{_T.db_table}" AS t SET "callback_due_at" = NULL '
    f'FROM unnest(%s::uuid[], %s::text[]) AS s("id", "status") WHERE t."id" = s."id" AND t."status" = s."status"'
)


@dataclass
class _Due:
    ticket: Ticket
    url: str
    secret: str
    key: str
    row_id: int | None = None
    done: bool = False  # delivered before (the ledger says so)
    error: str = ""
    permanent: bool = False  # no later attempt can succeed (the URL points into the operator's network)


def callbacks_drain(*, batch: int | None = None) -> int:
    """Send every callback that is due, a batch at a time; returns how many were delivered."""
    batch = batch or int(_cfg("CALLBACK_BATCH_SIZE"))
    per_client = max(1, int(_cfg("CALLBACK_PER_CLIENT")))
    sent = 0
    while claimed := _claim(batch):
        sent += _deliver(claimed)
        most_of_one_client = max(Counter(due.ticket.client_id for due in claimed).values())
        if len(claimed) < batch and most_of_one_client < per_client:
            # All that was due when it claimed: what settled since has a drain of its own coming
            # (callback_due), rather than this one claiming it a few at a time.
            return sent
    return sent


def callback_key(ticket: Ticket) -> str:
    """The delivery key of the ticket's current state change (the ledger's idempotency key, and the
    webhook's id): one per move into a terminal state — a replayed dead letter that dead-letters
    again, or a second `awaiting_review`, is a new state change with a callback of its own. A
    settled ticket's `updated_at` is the moment it entered that state (nothing else writes it)."""
    return f"{ticket.id}:callback:{ticket.status}:{int(ticket.updated_at.timestamp() * 1_000_000)}"


def _claim(limit: int) -> list[_Due]:
    # The lease outlasts a batch whose every POST times out (the POSTs go `CALLBACK_CONCURRENCY` at a
    # time), so another drain never claims a callback still being sent.
    now = timezone.now()
    rounds = -(-limit // max(1, int(_cfg("CALLBACK_CONCURRENCY")))) + 1
    lease = now + timedelta(seconds=rounds * float(_cfg("WEBHOOK_TIMEOUT_SECONDS")) + 5)
    per_client = max(1, int(_cfg("CALLBACK_PER_CLIENT")))
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, [now, limit * 4, per_client, limit, lease])
        rows = cursor.fetchall()
    claimed = []
    for row in rows:
        ticket = Ticket.from_db(connection.alias, _CLAIM_ATTNAMES, row[: len(_CLAIM_FIELDS)])
        client_url, secret = row[len(_CLAIM_FIELDS) :]
        key = callback_key(ticket)
        claimed.append(_Due(ticket=ticket, url=ticket.callback_url or client_url, secret=secret, key=key))
    return claimed


def _deliver(claimed: list[_Due]) -> int:
    settled = [due for due in claimed if not due.url]  # nothing to send
    to_send = []
    for due in _ledger(claimed):
        if due.row_id is None:
            continue  # written by a delivery this statement could not see: its lease brings it back
        (settled if due.done else to_send).append(due)
    _settle(settled, [])
    to_send = _take_slots(to_send)
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


# POSTs in flight per client in this process, across every drain: a client whose endpoint is slow
# holds at most CALLBACK_PER_CLIENT of the pool's threads; its other due callbacks wait their turn
# (due again in a second, not an attempt) instead of the pool's queue, ahead of other clients'.
_slots: dict[int, int] = {}
_slots_lock = threading.Lock()
_RETRY_BUSY_SECONDS = 1.0
# How long a slow endpoint may delay the settling (not the sending) of others' callbacks: an endpoint
# that answers one request at a time spreads a batch's answers over tens of milliseconds.
_SETTLE_GRACE_SECONDS = 0.1


def _take_slots(dues: list[_Due]) -> list[_Due]:
    """The dues whose client has a free slot (each taken); the others due again shortly."""
    limit = max(1, int(_cfg("CALLBACK_PER_CLIENT")))
    taken, busy = [], []
    with _slots_lock:
        for due in dues:
            client = due.ticket.client_id
            if _slots.get(client, 0) < limit:
                _slots[client] = _slots.get(client, 0) + 1
                taken.append(due)
            else:
                busy.append(due)
    if busy:
        later = timezone.now() + timedelta(seconds=_RETRY_BUSY_SECONDS)
        Ticket.objects.filter(pk__in=[d.ticket.id for d in busy], callback_due_at__isnull=False).update(
            callback_due_at=later
        )
        try:
            drain_schedule(countdown=_RETRY_BUSY_SECONDS)
        except Exception as exc:  # the sweeper starts a drain for what stays due
            _log.warning("callback drain not scheduled (the sweeper will send it): %s", exc)
    return taken


def _post_in_slot(due: _Due) -> None:
    try:
        _post(due)
    finally:
        with _slots_lock:
            _slots[due.ticket.client_id] -= 1


def _record(dues: list[_Due]) -> int:
    """Settle the delivered, schedule the failed again; how many were delivered."""
    delivered = [d for d in dues if not d.error]
    _settle(delivered, [d.row_id for d in delivered])
    for due in dues:
        if due.error:
            _failed(due)
    return len(delivered)


_LEDGER_SQL = (
    f'WITH new AS (INSERT INTO "{SideEffect._meta.db_table}" ("ticket_id", "idempotency_key", "tool", "arguments", '
    '"status", "attempts", "result", "last_error", "created_at", "finished_at") '
    "SELECT v.ticket_id, v.key, 'callback', jsonb_build_object('url', v.url), %s, 0, '{}'::jsonb, '', %s, NULL "
    "FROM unnest(%s::uuid[], %s::text[], %s::text[]) AS v(ticket_id, key, url) "
    'ON CONFLICT ("idempotency_key") DO NOTHING RETURNING "idempotency_key", "id", "status") '
    'SELECT "idempotency_key", "id", "status" FROM new UNION ALL '
    f'SELECT "idempotency_key", "id", "status" FROM "{SideEffect._meta.db_table}" WHERE "idempotency_key" = ANY(%s)'
)


def _ledger(claimed: list[_Due]) -> list[_Due]:
    """The ledger row of every callback with a URL, in one statement: written where there is none,
    read where an earlier delivery wrote it (done, or to be tried again)."""
    dues = [due for due in claimed if due.url]
    if not dues:
        return []
    keys = [due.key for due in dues]
    params = [
        LedgerStatus.STARTED.value,
        timezone.now(),
        [d.ticket.id for d in dues],
        keys,
        [d.url for d in dues],
        keys,
    ]
    with connection.cursor() as cursor:
        cursor.execute(_LEDGER_SQL, params)
        rows = {key: (row_id, status) for key, row_id, status in cursor.fetchall()}
    for due in dues:
        if due.key in rows:
            due.row_id, status = rows[due.key]
            due.done = status == LedgerStatus.DONE
    return dues


def _post(due: _Due) -> None:
    body = json.dumps(callback_payload(due.ticket), separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        **webhook_headers(secret=due.secret, msg_id=due.key, body=body),
        "Idempotency-Key": due.key,
    }
    try:
        response = http_client().post(due.url, content=body, headers=headers)
        if not response.is_success:
            due.error = f"callback answered {response.status_code}"
    except OutboundBlocked as exc:
        due.error, due.permanent = f"refused: {exc}", True
    except httpx.HTTPError as exc:
        due.error = f"{type(exc).__name__}: {exc}"


def _settle(dues: list[_Due], row_ids: list[int | None]) -> None:
    if not dues:
        return
    done = LedgerStatus.DONE.value
    with connection.cursor() as cursor:
        cursor.execute(
            _SETTLE_SQL,
            [done, timezone.now(), row_ids, done, [d.ticket.id for d in dues], [d.ticket.status for d in dues]],
        )


def _failed(due: _Due) -> None:
    """Counted in the ledger (one statement: a failure never overwrites a concurrent success); due
    again after a backoff, or given up after `CALLBACK_MAX_ATTEMPTS`."""

    with connection.cursor() as cursor:
        cursor.execute(_FAILED_SQL, [LedgerStatus.FAILED.value, due.error[:4000], due.row_id, LedgerStatus.DONE.value])
        row = cursor.fetchone()
    if row is None:
        return  # a concurrent delivery succeeded
    attempts = row[0]
    tickets = Ticket.objects.filter(pk=due.ticket.id, status=due.ticket.status, callback_due_at__isnull=False)
    if attempts >= max_attempts() or due.permanent:
        _log.warning("callback for %s abandoned after %d attempts: %s", due.key, attempts, due.error)
        if tickets.update(callback_due_at=None):
            CALLBACKS_ABANDONED.labels(str(due.ticket.client_id)).inc()
        return
    delay = retry_delay(attempts)
    tickets.update(callback_due_at=timezone.now() + timedelta(seconds=delay))
    try:
        drain_schedule(countdown=delay)
    except Exception as exc:
        _log.warning("callback retry not scheduled (the sweeper will send it): %s", exc)


_FAILED_SQL = (
    f'UPDATE "{SideEffect._meta.db_table}" SET "attempts" = "attempts" + 1, "status" = %s, "last_error" = %s '
    f'WHERE "id" = %s AND "status" <> %s RETURNING "attempts"'
)


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        with _executor_lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(int(_cfg("CALLBACK_CONCURRENCY")), thread_name_prefix="callback")
    return _executor
