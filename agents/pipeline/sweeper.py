"""The sweepers. Every 2 s (beat): the hops of a worker gone silent — killed, frozen — are
dispatched again (`workers_sweep_silent`). Every 30 s, the backstop: the broker may lose work,
Postgres does not; in-flight tickets untouched for too long are published again, and callbacks
overdue start a drain."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from agents.pipeline.dispatch import stage_enqueue
from agents.pipeline.spec import LLM_QUEUE, LLM_TASK, SPEC, handed_over
from project import heartbeat
from tickets.models import SETTLED_STATUSES, Ticket
from tickets.webhooks import drain_schedule

log = logging.getLogger(__name__)

# A callback due this long with no drain taking it is lost to a drain that died (its lease ran out) or
# was never scheduled: the silent-worker sweep, every few seconds, starts one.
CALLBACK_LOST_AFTER_SECONDS = 5.0


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


def workers_sweep_silent(*, now: float | None = None) -> int:
    """Dispatch again the hops of every worker whose heartbeat stopped (project/heartbeat.py): one
    recoverer claims each silent record; a ticket a live worker holds is left to it. Returns how
    many hops were dispatched again."""
    held = heartbeat.held_by_live_workers(now)  # (which also moves silent records to the orphans)
    silent = heartbeat.silent_workers(now)
    quiet = heartbeat.quiet_queues(now)
    restarted = 0
    for key, name, raw, record in silent:
        if not heartbeat.silent_claim(key, name, raw):
            continue  # another recoverer took it, or the worker woke up and beat again
        if record.get("queues"):
            since = float(record.get("at", 0)) - 2 * heartbeat.HEARTBEAT_STALE_SECONDS
            heartbeat.quiet_mark(heartbeat.text(name), record["queues"], since, now)
            quiet.append({"queues": record["queues"], "since": since})
        for task, args, eta in record.get("hops", []):
            hop = _hop_of(task, args)
            if hop is None or hop[0] in held:
                continue
            countdown = None
            if eta:  # a retry that was waiting in the worker: not an attempt, and it keeps its wait
                due = datetime.fromisoformat(eta)
                due = due if due.tzinfo else due.replace(tzinfo=UTC)
                countdown = max((due - timezone.now()).total_seconds(), 0.0)
            restarted += hop_restart(hop[0], hop[1], countdown=countdown, count_attempt=eta is None)
        log.warning("worker %s went silent: its %d hop(s) dispatched again", name, len(record.get("hops", [])))
    for mark in quiet:
        restarted += _sitting_in(set(mark["queues"]), float(mark["since"]), held, now)
    return restarted


def _sitting_in(queues: set[str], since: float, held: set[str], now: float | None) -> int:
    """Tickets due on `queues` that nobody took for HEARTBEAT_STALE_SECONDS since a consumer of
    those queues went silent: their message may sit in that worker's socket (pushed by the broker
    before it froze) where neither its heartbeat nor the queue shows it. Published again, not as an
    attempt (touched, so not again for another few seconds); a copy merely queued is skipped."""
    upto = (now if now is not None else timezone.now().timestamp()) - heartbeat.HEARTBEAT_STALE_SECONDS
    if upto <= since:
        return 0
    sitting = (
        Ticket.objects.exclude(status__in=SETTLED_STATUSES)
        .filter(updated_at__gte=datetime.fromtimestamp(since, UTC), updated_at__lt=datetime.fromtimestamp(upto, UTC))
        .order_by("updated_at")
        .values_list("pk", "status", "context")[:500]
    )
    restarted = 0
    for pk, status, context in sitting:
        spec = SPEC.by_status[status]
        queue = LLM_QUEUE if handed_over(context, spec.name) else spec.queue_name
        if queue in queues and str(pk) not in held:
            restarted += hop_restart(str(pk), spec.name, count_attempt=False)
    return restarted


def _hop_of(task: str, args: list[Any]) -> tuple[str, str] | None:
    """(ticket, stage) of a stage task's or a Claude hop's arguments; None for any other task."""
    if task == LLM_TASK and len(args) >= 2:
        return str(args[0]), str(args[1])
    stage = next((spec.name for spec in SPEC.stages if spec.task == task), None)
    return (str(args[0]), stage) if stage and args else None


def hop_restart(ticket_id: str, stage: str, *, countdown: float | None = None, count_attempt: bool = True) -> bool:
    """Dispatch a hop of `stage` again at once, if the ticket is still in flight at that stage (or
    one after it: a fused hop) — through the conditional write: the row must still hold the status
    and attempt count read here, and the attempt count moves on, so the hop that was cut off (a
    frozen worker that wakes up, a child past its hard time limit) fails its own write when it comes
    back. Counted as an attempt (a hop that kills its worker every time ends in a dead letter), but
    for a retry that was only waiting. False when the ticket moved on or settled."""
    row = Ticket.objects.filter(pk=ticket_id).values_list("status", "stage_attempts", "context").first()
    if row is None:
        return False
    status, attempts, context = row
    spec = SPEC.by_status.get(status)
    if spec is None or SPEC.order[spec.name] < SPEC.order[stage]:
        return False  # settled, or not at this hop any more
    changes: dict[str, Any] = {"updated_at": timezone.now()}
    if count_attempt:
        changes["stage_attempts"] = attempts + 1
    if not Ticket.objects.filter(pk=ticket_id, status=status, stage_attempts=attempts).update(**changes):
        return False  # another delivery moved it meanwhile
    stage_enqueue(ticket_id, spec.name, context=context, countdown=countdown)
    return True
