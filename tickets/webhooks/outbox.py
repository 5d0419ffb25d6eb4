"""The outbox in Postgres: claim the due callbacks under a lease, write and read their ledger rows,
settle the delivered, count the failed, put off what must wait.

Every statement here is one per batch (or per failed callback), never one per delivered callback,
and each is matched on the delivery key — the ticket's status *and* the moment it entered it — so a
ticket that has since moved, even back into the same status (a replay that dead-letters again),
keeps the callback its new state change is owed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.utils import timezone

from tickets.models import CallbackDelivery, Client, DeliveryStatus, Ticket
from tickets.webhooks.payload import callback_key
from tickets.webhooks.schedule import cfg

# Time the settling of a POST may take after its deadline: a lease ends only after it.
LEASE_MARGIN_SECONDS = 5.0


@dataclass
class Due:
    ticket: Ticket
    url: str
    secret: str
    key: str
    lease_until: datetime
    row_id: int | None = None
    done: bool = False  # delivered before (the ledger says so)
    error: str = ""
    permanent: bool = False  # no later attempt can succeed (the URL points into the operator's network)
    sent: bool = True  # False: not POSTed (its lease would run out first); due again as it is


_PAYLOAD_FIELDS = {  # and the client, whose slots a POST takes (deferred, it would cost a query each)
    *("id", "client", "status", "idempotency_key", "customer_ref", "intent", "confidence", "action", "reply"),
    *("resolved_at", "callback_url", "updated_at"),
}
# In the model's order: `Model.from_db` maps a partial row by it.
_CLAIM_FIELDS = [f.name for f in Ticket._meta.concrete_fields if f.name in _PAYLOAD_FIELDS]
_CLAIM_ATTNAMES = [Ticket._meta.get_field(n).attname for n in _CLAIM_FIELDS]
_T, _C, _L = Ticket._meta, Client._meta, CallbackDelivery._meta


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
# The tickets whose delivery key is still the one claimed: the same status, entered at the same moment.
_SAME_KEY = (
    'FROM unnest(%s::uuid[], %s::text[], %s::timestamptz[]) AS s("id", "status", "updated_at") '
    'WHERE t."id" = s."id" AND t."status" = s."status" AND t."updated_at" = s."updated_at"'
)
# Delivered (or nothing to send): the ledger rows done and the tickets off the list, in one statement.
_SETTLE_SQL = (
    f'WITH done AS (UPDATE "{_L.db_table}" SET "attempts" = "attempts" + 1, "status" = %s, '
    f'"finished_at" = %s WHERE "id" = ANY(%s) AND "status" <> %s RETURNING "id") '
    f'UPDATE "{_T.db_table}" AS t SET "callback_due_at" = NULL {_SAME_KEY}'
)
_POSTPONE_SQL = (
    f'UPDATE "{_T.db_table}" AS t SET "callback_due_at" = %s {_SAME_KEY} AND t."callback_due_at" IS NOT NULL'
)
_LEDGER_SQL = (
    f'WITH new AS (INSERT INTO "{_L.db_table}" ("ticket_id", "idempotency_key", "url", '
    '"status", "attempts", "last_error", "created_at", "finished_at") '
    "SELECT v.ticket_id, v.key, v.url, %s, 0, '', %s, NULL "
    "FROM unnest(%s::uuid[], %s::text[], %s::text[]) AS v(ticket_id, key, url) "
    'ON CONFLICT ("idempotency_key") DO NOTHING RETURNING "idempotency_key", "id", "status") '
    'SELECT "idempotency_key", "id", "status" FROM new UNION ALL '
    f'SELECT "idempotency_key", "id", "status" FROM "{_L.db_table}" WHERE "idempotency_key" = ANY(%s)'
)
_FAILED_SQL = (
    f'UPDATE "{_L.db_table}" SET "attempts" = "attempts" + 1, "status" = %s, "last_error" = %s '
    f'WHERE "id" = %s AND "status" <> %s RETURNING "attempts"'
)
# A client's breaker opened: every callback of it due before `until` waits until then.
_HOLD_CLIENT_SQL = (
    f'UPDATE "{_T.db_table}" SET "callback_due_at" = %s '
    f'WHERE "{_CLIENT_COL}" = %s AND "callback_due_at" IS NOT NULL AND "callback_due_at" < %s'
)


def lease_seconds(limit: int) -> float:
    """A batch's lease: its POSTs never queue (a drain takes no more slots than the pool has threads),
    each has WEBHOOK_TIMEOUT_SECONDS over the whole request, and one that could not finish within the
    lease is not started (delivery checks), so another drain never claims a callback still being sent."""
    rounds = -(-limit // max(1, int(cfg("CALLBACK_CONCURRENCY")))) + 1
    return rounds * float(cfg("WEBHOOK_TIMEOUT_SECONDS")) + LEASE_MARGIN_SECONDS


def claim(limit: int, *, per_client: int) -> list[Due]:
    """Up to `limit` due callbacks, at most `per_client` of one client, under a lease."""
    now = timezone.now()
    lease = now + timedelta(seconds=lease_seconds(limit))
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, [now, limit * 4, per_client, limit, lease])
        rows = cursor.fetchall()
    claimed = []
    for row in rows:
        ticket = Ticket.from_db(connection.alias, _CLAIM_ATTNAMES, row[: len(_CLAIM_FIELDS)])
        client_url, secret = row[len(_CLAIM_FIELDS) :]
        url = ticket.callback_url or client_url
        claimed.append(Due(ticket=ticket, url=url, secret=secret, key=callback_key(ticket), lease_until=lease))
    return claimed


def ledger(claimed: list[Due]) -> list[Due]:
    """The ledger row of every callback with a URL, in one statement: written where there is none,
    read where an earlier delivery wrote it (done, or to be tried again)."""
    dues = [due for due in claimed if due.url]
    if not dues:
        return []
    keys = [due.key for due in dues]
    params = [DeliveryStatus.STARTED.value, timezone.now(), [d.ticket.id for d in dues], keys, [d.url for d in dues]]
    with connection.cursor() as cursor:
        cursor.execute(_LEDGER_SQL, [*params, keys])
        rows = {key: (row_id, status) for key, row_id, status in cursor.fetchall()}
    for due in dues:
        if due.key in rows:
            due.row_id, status = rows[due.key]
            due.done = status == DeliveryStatus.DONE
    return dues


def _keys(dues: list[Due]) -> list[Any]:
    return [[d.ticket.id for d in dues], [d.ticket.status for d in dues], [d.ticket.updated_at for d in dues]]


def settle(dues: list[Due], row_ids: list[int | None]) -> None:
    """The delivered (or with nothing to send) off the list, their ledger rows done: one statement."""
    if not dues:
        return
    done = DeliveryStatus.DONE.value
    with connection.cursor() as cursor:
        cursor.execute(_SETTLE_SQL, [done, timezone.now(), row_ids, done, *_keys(dues)])


def postpone(dues: list[Due], until: datetime) -> None:
    """Due again at `until`, not an attempt: one statement."""
    if dues:
        with connection.cursor() as cursor:
            cursor.execute(_POSTPONE_SQL, [until, *_keys(dues)])


def hold_client(client_id: int, until: datetime) -> int:
    """Every callback of the client due before `until` waits until then (its breaker opened)."""
    with connection.cursor() as cursor:
        cursor.execute(_HOLD_CLIENT_SQL, [until, client_id, until])
        return cursor.rowcount


def count_failure(due: Due) -> int | None:
    """Count a failed attempt in the ledger; its attempts, or None when a concurrent delivery
    succeeded (a failure never overwrites a success)."""
    params = [DeliveryStatus.FAILED.value, due.error[:4000], due.row_id, DeliveryStatus.DONE.value]
    with connection.cursor() as cursor:
        cursor.execute(_FAILED_SQL, params)
        row = cursor.fetchone()
    return None if row is None else row[0]


def same_key(due: Due) -> Any:
    """The ticket while its delivery key is still `due`'s and its callback still due."""
    return Ticket.objects.filter(
        pk=due.ticket.id, status=due.ticket.status, updated_at=due.ticket.updated_at, callback_due_at__isnull=False
    )
