"""Helpers of the callback tests."""

from __future__ import annotations

from django.utils import timezone

from tickets.models import Ticket
from tickets.webhooks.delivery import callbacks_drain


def drain_until_settled(rounds: int = 10) -> None:
    """Drain until no callback is due, as the drains a drain schedules for what it put off would.

    One drain can leave callbacks due: those past the client's share of the pool (put off a second),
    and, on a loaded machine, those whose POST could not end before their lease (not started). Each
    round makes them due now and drains again; a callback still due after `rounds` is a failure."""
    for _ in range(rounds):
        due = Ticket.objects.exclude(callback_due_at=None)
        if not due.exists():
            return
        due.update(callback_due_at=timezone.now())
        callbacks_drain()
