"""Resend a settled ticket's callback (the API's resend, the admin's action)."""

from __future__ import annotations

from django.utils import timezone

from tickets.models import TERMINAL, CallbackDelivery, DeliveryStatus, Ticket
from tickets.webhooks.payload import callback_key
from tickets.webhooks.schedule import drain_schedule


def callback_resend(*, ticket: Ticket) -> bool:
    """Send the settled ticket's callback again (an abandoned one, or one the client lost), under the
    same delivery key — the client can tell it is the same event — with a fresh retry schedule.
    False when the ticket is not settled (its callback comes when it is)."""
    ticket = Ticket.objects.get(pk=ticket.pk)
    if ticket.status not in TERMINAL:
        return False
    CallbackDelivery.objects.filter(idempotency_key=callback_key(ticket)).update(
        status=DeliveryStatus.STARTED, attempts=0, last_error="", finished_at=None
    )
    Ticket.objects.filter(pk=ticket.pk, status=ticket.status, updated_at=ticket.updated_at).update(
        callback_due_at=timezone.now()
    )
    drain_schedule()
    return True
