"""Signed callbacks to the client when a ticket reaches a terminal state."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import httpx
from django.db import connection
from django.db.models import F
from django.utils import timezone

from agents.models import LedgerStatus, SideEffect
from agents.tools import http_client, ledger_insert
from tickets.models import Ticket

SIGNATURE_HEADER = "X-Signature"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """`t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, as Stripe signs its webhooks."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, body: bytes, header: str, *, tolerance: int = 300) -> bool:
    """Check a signature header against the body; what a client runs on receipt."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


def callback_payload(ticket: Ticket) -> dict[str, Any]:
    """What the client is told: the ticket's outcome, not its trace."""
    return {
        "event": f"ticket.{ticket.status}",
        "ticket": {
            "id": str(ticket.id),
            "idempotency_key": ticket.idempotency_key,
            "customer_ref": ticket.customer_ref,
            "status": ticket.status,
            "intent": ticket.intent,
            "confidence": ticket.confidence,
            "action": ticket.action,
            "reply": ticket.reply,
            "resolved_at": ticket.resolved_at.isoformat() if ticket.resolved_at else None,
        },
    }


class CallbackFailed(Exception):
    """The client's endpoint did not take the callback; worth trying again later."""


def callback_deliver(*, ticket_id: str, status: str) -> str:
    """POST the signed outcome once per (ticket, status); returns 'sent', 'done' or 'none'."""
    ticket = Ticket.objects.select_related("client").get(pk=ticket_id)
    url = ticket.effective_callback_url
    if not url:
        callback_settled(ticket_id=ticket_id, status=status)
        return "none"
    key = f"{ticket.id}:callback:{status}"
    row_id = ledger_insert(ticket_id=str(ticket.id), idempotency_key=key, tool="callback", arguments={"url": url})
    if row_id is None:  # an earlier delivery wrote the row: done, or to be tried again
        row = SideEffect.objects.filter(idempotency_key=key).values("id", "status").get()
        if row["status"] == LedgerStatus.DONE:
            callback_settled(ticket_id=ticket_id, status=status)
            return "done"
        row_id = row["id"]
    body = json.dumps(callback_payload(ticket), separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(ticket.client.webhook_secret, body, int(time.time())),
        "Idempotency-Key": key,
    }
    try:
        response = http_client().post(url, content=body, headers=headers)
        ok, error = response.is_success, f"callback answered {response.status_code}"
    except httpx.HTTPError as exc:
        ok, error = False, f"{type(exc).__name__}: {exc}"
    if not ok:
        # One statement: the attempt is counted in Postgres, not read-modified-written; a failure
        # never overwrites a concurrent delivery's success.
        SideEffect.objects.filter(pk=row_id).exclude(status=LedgerStatus.DONE).update(
            attempts=F("attempts") + 1, status=LedgerStatus.FAILED, last_error=error
        )
        raise CallbackFailed(error)
    with connection.cursor() as cursor:  # the ledger row done and the ticket's callback settled: one round trip
        cursor.execute(_DELIVERED_SQL, [LedgerStatus.DONE.value, timezone.now(), row_id, ticket.pk, status])
    return "sent"


_DELIVERED_SQL = (
    f'WITH delivered AS (UPDATE "{SideEffect._meta.db_table}" SET "attempts" = "attempts" + 1, '
    f'"status" = %s, "finished_at" = %s WHERE "id" = %s RETURNING "id") '
    f'UPDATE "{Ticket._meta.db_table}" SET "callback_due_at" = NULL WHERE "id" = %s AND "status" = %s'
)


def callback_settled(*, ticket_id: str, status: str) -> None:
    """Nothing more to send for the ticket's `status` (delivered, no URL, or given up): off the
    sweeper's list — unless the ticket has moved to another terminal state, whose callback is due."""
    Ticket.objects.filter(pk=ticket_id, status=status, callback_due_at__isnull=False).update(callback_due_at=None)
