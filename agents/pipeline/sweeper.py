"""The sweeper (beat, every 30 s): the broker may lose work, Postgres does not. In-flight tickets
untouched for too long are published again, and callbacks overdue start a drain."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from agents.pipeline.dispatch import stage_enqueue
from agents.pipeline.spec import SPEC
from tickets.models import SETTLED_STATUSES, Ticket
from tickets.webhooks import drain_schedule


def tickets_sweep_stuck(*, older_than_seconds: int | None = None, limit: int = 1000) -> int:
    """Re-enqueue in-flight tickets untouched for too long (their message may be lost)."""
    age = older_than_seconds if older_than_seconds is not None else settings.PIPELINE["STUCK_AFTER_SECONDS"]
    cutoff = timezone.now() - timedelta(seconds=age)
    # Written as the partial index `ticket_in_flight` is (the same condition), so Postgres can prove
    # the index applies: `status IN (<in-flight>)` it cannot, and then read every ticket of the
    # client's status index each period (0.6 s at 10⁶ tickets).
    stuck = list(
        Ticket.objects.exclude(status__in=SETTLED_STATUSES)
        .filter(updated_at__lt=cutoff)
        .order_by("updated_at")
        .values_list("pk", "status", "context")[:limit]
    )
    for pk, status, context in stuck:
        # Touch first, so the next sweep leaves it alone for another period; and count an attempt:
        # a hop that never finishes (killed by the time limit again and again) must end, not loop.
        Ticket.objects.filter(pk=pk, status=status).update(
            updated_at=timezone.now(), stage_attempts=F("stage_attempts") + 1
        )
        stage_enqueue(pk, SPEC.by_status[status].name, context=context, keep_tenant=True)
    return len(stuck) + callbacks_sweep_lost(cutoff=cutoff, limit=limit)


def callbacks_sweep_lost(*, cutoff: datetime, limit: int = 1000) -> int:
    """Start a drain when a callback has been due since before `cutoff`: its drain was never
    scheduled (Redis away at the commit), or died with its rows claimed (the lease ran out). The
    partial index `ticket_callback_due` holds only due callbacks, so this read costs the same at
    10⁶ tickets as at 10³. Returns how many are overdue (at most `limit`)."""
    overdue = len(
        Ticket.objects.filter(callback_due_at__lt=cutoff).order_by("callback_due_at").values_list("pk")[:limit]
    )
    if overdue:
        drain_schedule()
    return overdue
