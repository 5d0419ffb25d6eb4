"""The drain task, on the `webhooks` queue (celeryconfig routes it by name)."""

from __future__ import annotations

from celery import shared_task

from tickets.webhooks.delivery import callbacks_drain
from tickets.webhooks.schedule import DRAIN_TASK


@shared_task(name=DRAIN_TASK, acks_late=True)
def deliver_callbacks() -> int:
    """POST every callback that is due, a batch at a time (tickets/webhooks/delivery.py)."""
    return callbacks_drain()
