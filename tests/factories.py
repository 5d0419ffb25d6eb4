"""Factories for test data, through the same services the product uses."""

from __future__ import annotations

import itertools
from typing import Any

from tickets.models import Client, Ticket
from tickets.services import client_create

_seq = itertools.count(1)


def client_with_token(name: str | None = None, **kwargs: Any) -> tuple[Client, str]:
    """A new API client and its bearer token."""
    return client_create(name=name or f"client-{next(_seq)}", **kwargs)


def ticket_payload(**overrides: Any) -> dict[str, Any]:
    """A valid POST /tickets/ body."""
    payload: dict[str, Any] = {
        "customer_ref": "cust-1",
        "channel": "email",
        "subject": "",
        "body": "My card still has not arrived, it has been two weeks.",
        "metadata": {"locale": "en-GB"},
        "priority": "normal",
    }
    payload.update(overrides)
    return payload


def ticket_make(client: Client, **fields: Any) -> Ticket:
    """A ticket row straight in the database (no pipeline)."""
    defaults: dict[str, Any] = {"body": "hello", "customer_ref": "cust-1"}
    defaults.update(fields)
    return Ticket.objects.create(client=client, **defaults)
