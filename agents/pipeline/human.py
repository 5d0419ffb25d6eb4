"""What people do to a ticket from the review queue or the API: replay a dead letter, resume at
execute with their decision, or dismiss. Each locks the row, checks the state machine, writes the
decision's trace row and publishes the next hop after the commit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from agents.models import DeadLetter, Trace, TraceStatus
from agents.people import review_close_for_replay
from agents.pipeline import tenants
from agents.pipeline.dispatch import after_commit, stage_enqueue
from agents.pipeline.events import announce
from agents.pipeline.spec import REVIEW, SPEC
from agents.stages.types import HUMAN
from tickets.models import IllegalTransition, Status, Ticket


def ticket_replay(*, ticket: Ticket) -> Ticket:
    """Re-run a dead-lettered ticket from the stage that failed."""
    with transaction.atomic():
        locked = Ticket.objects.select_for_update().get(pk=ticket.pk)
        if locked.status != Status.DEAD_LETTERED:
            raise IllegalTransition(f"ticket is {locked.status}; only dead_lettered tickets can be replayed")
        letter = DeadLetter.objects.filter(ticket=locked, replayed_at__isnull=True).order_by("-created_at").first()
        spec = SPEC.by_name[letter.stage] if letter else SPEC.first
        SPEC.check(locked.status, spec.status)
        # The dead letter is no longer the outcome: a callback still due for it is dropped (the
        # client is told the replay's outcome), or a drain would tell it of an in-flight state.
        locked.status, locked.stage_attempts, locked.callback_due_at = spec.status, 0, None
        locked.save(update_fields=["status", "stage_attempts", "callback_due_at", "updated_at"])
        if letter:
            DeadLetter.objects.filter(pk=letter.pk).update(replayed_at=timezone.now())
        review_close_for_replay(ticket=locked, stage=spec.name)
        # Back in flight: counted against its tenant's share, and published in the tenant's lane.
        transaction.on_commit(lambda: _reenter(locked, spec.name, locked.context))
    return locked


def _reenter(ticket: Ticket, stage: str, context: dict[str, Any] | None = None) -> None:
    """A settled ticket goes back in flight: one more for its tenant, a cheap stage in the tenant's lane."""
    tenants.enter(ticket.client_id)
    stage_enqueue(ticket.pk, stage, context=context, client_id=ticket.client_id)


def _decision_trace(ticket: Ticket, decision: dict[str, Any], started_at: datetime | None = None) -> Trace:
    """The trace row of a person's decision: the ticket's history shows who decided what, and when."""
    now = timezone.now()
    started = started_at or now
    return Trace.objects.create(
        ticket_id=ticket.pk,
        stage=REVIEW,
        attempt=1,
        status=TraceStatus.OK,
        started_at=started,
        finished_at=now,
        duration_ms=max((now - started).total_seconds() * 1000, 0.0),
        tier="human",
        output=decision,
    )


def ticket_resume(
    *,
    ticket: Ticket,
    intent: str,
    reply: str,
    reviewer: str = "",
    decision: str = "correct",
    started_at: datetime | None = None,
) -> None:
    """A person decided: resume the ticket at the spec's resume stage with their intent and reply."""
    resume = SPEC.resume
    with transaction.atomic():
        locked = Ticket.objects.select_for_update().get(pk=ticket.pk)
        SPEC.check(locked.status, resume.status)
        locked.context = {**locked.context, HUMAN: {"intent": intent, "reply": reply}}
        locked.status, locked.stage_attempts = resume.status, 0
        locked.save(update_fields=["context", "status", "stage_attempts", "updated_at"])
        _decision_trace(
            locked, {"decision": decision, "intent": intent, "reply": reply, "reviewer": reviewer}, started_at
        )
        transaction.on_commit(lambda: _reenter(locked, resume.name))


def ticket_dismiss(*, ticket: Ticket, reason: str, reviewer: str = "", started_at: datetime | None = None) -> Ticket:
    """A person closed a waiting ticket without acting: resolved, action "dismissed", no further
    reply; the client is told, as for any other terminal state. IllegalTransition unless the
    ticket waits for a person (awaiting review, or dead-lettered)."""
    with transaction.atomic():
        locked = Ticket.objects.select_for_update().get(pk=ticket.pk)
        if locked.status not in (Status.AWAITING_REVIEW, Status.DEAD_LETTERED):
            raise IllegalTransition(f"ticket is {locked.status}; only a waiting ticket can be dismissed")
        SPEC.check(locked.status, Status.RESOLVED)
        locked.status, locked.action, locked.resolved_at = Status.RESOLVED, "dismissed", timezone.now()
        locked.callback_due_at = locked.resolved_at
        locked.context = {**locked.context, HUMAN: {"decision": "dismiss", "reason": reason}}
        locked.save(update_fields=["status", "action", "resolved_at", "callback_due_at", "context", "updated_at"])
        trace = _decision_trace(locked, {"decision": "dismiss", "reason": reason, "reviewer": reviewer}, started_at)
        announce(locked, trace, "ok", Status.RESOLVED, locked.context)
        after_commit(locked.pk, Status.RESOLVED, leaves_flight=False)  # it waited: settled already
    return locked
