"""A request enters the pipeline: stored once per idempotency key (`tickets.services.ticket_create`),
counted in its tenant's work in flight, then its first stage published (in the tenant's lane) once
the row is committed."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from agents.pipeline import tenants
from agents.pipeline.dispatch import stage_enqueue
from agents.pipeline.spec import SPEC
from tickets.models import Client, Ticket
from tickets.services import ticket_create


def ticket_submit(
    *, client: Client, payload: dict[str, Any], idempotency_key: str | None = None, admitted: bool = False
) -> tuple[Ticket, bool]:
    """Store a new ticket and start its pipeline; a known key returns the first ticket instead.

    `admitted`: the caller's `tenants.admit` already counted it (the API); a ticket not made after
    all (a known key, a conflict, an error) is then uncounted here. Otherwise it is counted now."""
    try:
        ticket, created = ticket_create(client=client, payload=payload, idempotency_key=idempotency_key)
    except BaseException:
        if admitted:
            tenants.leave(client.pk)
        raise
    if created and not admitted:
        tenants.enter(client.pk)
    elif admitted and not created:
        tenants.leave(client.pk)
    if created:
        # Enqueued only once the row is committed (at once in autocommit, at the caller's commit
        # inside a transaction): a worker never sees a ticket that isn't there. robust: a broker
        # outage after the commit must not turn a stored ticket into a 500 (a client would retry and
        # get two); the sweeper starts it from Postgres instead.
        transaction.on_commit(
            lambda: stage_enqueue(ticket.id, SPEC.first.name, client_id=ticket.client_id), robust=True
        )
    return ticket, created
