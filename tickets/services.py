"""Ticket services: accept a request, exactly once per idempotency key; clients and their API keys."""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from tickets.models import ApiKey, Client, Ticket, hash_token


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
    """Store a new ticket; a known key returns the first ticket instead (the pipeline starts it:
    `agents.pipeline.intake.ticket_submit`)."""
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
    return ticket, True


API_KEY_PREFIX = "sk_"
API_KEY_PREFIX_SHOWN = 11  # "sk_" and 8 characters: enough to tell a client's keys apart


def api_key_create(*, client: Client, name: str, expires_at: datetime | None = None) -> tuple[ApiKey, str]:
    """A new API key for `client`; returns it with the key itself (shown once, stored only as a hash)."""
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        client=client,
        name=name,
        prefix=secret[:API_KEY_PREFIX_SHOWN],
        key_hash=hash_token(secret),
        expires_at=expires_at,
    )
    return key, secret


def api_key_revoke(*, key: ApiKey, at: datetime | None = None) -> ApiKey:
    """Refuse the key from `at` (now by default); a later revocation never extends an earlier one."""
    at = at or timezone.now()
    if key.revoked_at is None or key.revoked_at > at:
        key.revoked_at = at
        key.save(update_fields=["revoked_at"])
    return key


def api_key_rotate(*, key: ApiKey, grace: timedelta) -> tuple[ApiKey, str]:
    """A successor to `key` (same client, same name); the old key keeps working for `grace`, so
    every caller can switch over without downtime."""
    new, secret = api_key_create(client=key.client, name=key.name, expires_at=key.expires_at)
    api_key_revoke(key=key, at=timezone.now() + grace)
    return new, secret


def client_create(*, name: str, callback_url: str = "", key_name: str = "default") -> tuple[Client, str]:
    """Create an API client with one API key; returns it with that key (shown once, stored only as a
    hash). Its webhook signing secret is `client.webhook_secret`: show it once too."""
    with transaction.atomic():
        client = Client.objects.create(name=name, callback_url=callback_url)
        _, secret = api_key_create(client=client, name=key_name)
    return client, secret
