"""Ticket services: accept a request, exactly once per idempotency key."""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from typing import Any

from django.db import IntegrityError, connection, transaction

from agents.pipeline.dispatch import stage_enqueue
from agents.pipeline.spec import SPEC
from tickets.models import Client, Ticket, hash_token


class IdempotencyConflict(Exception):
    """The idempotency key was used before with a different request."""

    def __init__(self, ticket: Ticket):
        super().__init__(f"idempotency key already used for ticket {ticket.id} with a different request")
        self.ticket = ticket


def request_fingerprint(payload: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of what the client asked for."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _existing(client: Client, key: str, fingerprint: str) -> Ticket:
    ticket = Ticket.objects.get(client=client, idempotency_key=key)
    if ticket.request_hash != fingerprint:
        raise IdempotencyConflict(ticket)
    return ticket


_INSERT_FIELDS = Ticket._meta.concrete_fields
_INSERT_COLUMNS = ", ".join(f'"{f.column}"' for f in _INSERT_FIELDS)
_INSERT_SQL = (
    f'INSERT INTO "{Ticket._meta.db_table}" ({_INSERT_COLUMNS}) VALUES ({", ".join(["%s"] * len(_INSERT_FIELDS))})'
)


def _insert(ticket: Ticket) -> None:
    """`ticket.save()` for a new row, as SQL written once: the ORM spent more CPU compiling this
    INSERT than the rest of the API's create (no signal receivers listen to Ticket saves)."""
    params = [f.get_db_prep_save(f.pre_save(ticket, True), connection) for f in _INSERT_FIELDS]
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_SQL, params)
    ticket._state.adding, ticket._state.db = False, connection.alias


def ticket_create(
    *, client: Client, payload: dict[str, Any], idempotency_key: str | None = None
) -> tuple[Ticket, bool]:
    """Store a new ticket and start its pipeline; a known key returns the first ticket instead."""
    fingerprint = request_fingerprint(payload)
    try:
        # One INSERT (autocommit: no BEGIN/COMMIT round trips); a known key is the unique
        # constraint's to find, so the first request of a key costs no extra read. Inside a caller's
        # transaction, a savepoint keeps that transaction usable when the key is taken.
        ticket = Ticket(client=client, idempotency_key=idempotency_key or None, request_hash=fingerprint, **payload)
        with transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext():
            _insert(ticket)
    except IntegrityError:
        if not idempotency_key:
            raise
        return _existing(client, idempotency_key, fingerprint), False  # a retry, or a race with the same key
    # Enqueued only once the row is committed (at once in autocommit, at the caller's commit inside
    # a transaction): a worker never sees a ticket that isn't there. robust: a broker outage after
    # the commit must not turn a stored ticket into a 500 (a client would retry and get two); the
    # sweeper starts it from Postgres instead.
    transaction.on_commit(lambda: stage_enqueue(ticket.id, SPEC.first.name, client_id=ticket.client_id), robust=True)
    return ticket, True


def client_create(*, name: str, callback_url: str = "") -> tuple[Client, str]:
    """Create an API client; returns it with its token (shown once, stored only as a hash)."""
    token = secrets.token_urlsafe(32)
    client = Client.objects.create(
        name=name, token_hash=hash_token(token), token_prefix=token[:8], callback_url=callback_url
    )
    return client, token
