"""Running one stage of one ticket: load, call the pure stage, persist the outcome atomically.

Every hop is chosen from what Postgres holds (the ticket's status and context), never from the
message that carried the task, so a ticket can be resumed, swept or replayed from any stage, and
a second delivery of the same stage finds the status moved on and changes nothing.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.dispatch import Signal
from django.utils import timezone
from django.utils.module_loading import import_string

from agents.catalog import get_catalog
from agents.models import DeadLetter, Trace, TraceStatus
from agents.stages import STAGES
from agents.stages.types import StageContext, StageError, StageResult, TicketInput
from agents.tools import LedgerTools
from tickets.models import TERMINAL, IllegalTransition, Status, Ticket, check_transition

log = logging.getLogger(__name__)

STAGE_STATUS = {
    "parse": Status.PARSING,
    "classify": Status.CLASSIFYING,
    "decide": Status.DECIDING,
    "execute": Status.EXECUTING,
    "escalate": Status.ESCALATING,
}
STATUS_STAGE = {status: stage for stage, status in STAGE_STATUS.items()} | {Status.RECEIVED: "parse"}
NEXT_STATUS = {
    "parse": Status.CLASSIFYING,
    "classify": Status.DECIDING,
    "decide": Status.EXECUTING,
    "execute": Status.RESOLVED,
    "escalate": Status.AWAITING_REVIEW,
}

# Sent after every stage attempt is persisted (metrics, logs subscribe; nothing here depends on them).
# kwargs: ticket_id, client_id, stage, attempt, outcome ("ok" | "retry" | "failed" | "escalated"),
# duration_ms, tier, model, confidence, input_tokens, output_tokens, cost_usd, cache_hit, new_status,
# created_at (the ticket's, for end-to-end latency).
stage_finished = Signal()

# Sent after a dead letter is replayed, so the review queue can close its dead-letter review
# (agents does not import reviews).
ticket_replayed = Signal()


@dataclass(frozen=True)
class Outcome:
    """What became of one delivery: committed, retry later, dead-lettered, or nothing to do."""

    kind: str
    retry_in: float | None = None


_tiers: list[Any] | None = None


def classifier_tiers() -> list[Any]:
    """The configured tiers, built once per process (a tier may hold a loaded model)."""
    global _tiers
    if _tiers is None:
        _tiers = [import_string(path)() for path in settings.CLASSIFIER_TIERS]
    return _tiers


def handed_over(context: dict[str, Any], stage: str) -> bool:
    """Whether the stage's cheap variant already ran and handed the ticket to the llm queue."""
    return f"{stage}_cpu" in context


def stage_enqueue(
    ticket_id: str, stage: str, *, context: dict[str, Any] | None = None, countdown: float | None = None
) -> None:
    """Publish the stage's task by name (routes in celeryconfig choose its queue)."""
    if context is not None and handed_over(context, stage):
        current_app.send_task("agents.llm_stage", args=[str(ticket_id), stage], countdown=countdown)
    else:
        current_app.send_task(f"agents.{stage}", args=[str(ticket_id)], countdown=countdown)


def customer_history(ticket: Ticket, limit: int) -> list[dict[str, Any]]:
    """The customer's last interactions, compact: never the whole transcript."""
    if not ticket.customer_ref:
        return []
    rows = (
        Ticket.objects.filter(
            client_id=ticket.client_id, customer_ref=ticket.customer_ref, created_at__lt=ticket.created_at
        )
        .order_by("-created_at")
        .values("created_at", "status", "intent", "reply")[:limit]
    )
    return [
        {"at": r["created_at"].isoformat(), "status": r["status"], "intent": r["intent"], "reply": r["reply"][:200]}
        for r in rows
    ]


def ticket_input(ticket: Ticket) -> TicketInput:
    """The stage-facing view of a ticket."""
    return TicketInput(
        id=str(ticket.id),
        client_id=ticket.client_id,
        customer_ref=ticket.customer_ref,
        channel=ticket.channel,
        subject=ticket.subject,
        body=ticket.body,
        priority=ticket.priority,
        metadata=ticket.metadata,
        context=ticket.context,
    )


_llm: dict[str, Any] = {}


def llm_parts() -> dict[str, Any]:
    """The network-bound tier and model client, built once per process; empty when not configured."""
    if not _llm and settings.LLM_ENABLED:
        _llm["tier"] = import_string(settings.LLM_TIER)()
        _llm["client"] = getattr(_llm["tier"], "client", None)
    return _llm


def stage_context(stage: str, ticket: Ticket, attempt: int, variant: str = "cpu") -> StageContext:
    """Lend the stage only what it needs: tiers to classify, tools to execute, history to decide."""
    ctx = StageContext(
        catalog=get_catalog(), attempt=attempt, holding_reply=settings.PIPELINE["HOLDING_REPLY"], variant=variant
    )
    if variant == "llm":
        parts = llm_parts()
        ctx.tiers = [parts["tier"]] if stage == "classify" and parts else []
        ctx.llm = parts.get("client")
    elif stage == "classify":
        ctx.tiers = classifier_tiers()
        ctx.can_handoff = settings.LLM_ENABLED
    if stage in ("execute", "escalate"):
        ctx.tools = LedgerTools(str(ticket.id))
    if stage == "decide":
        ctx.history = customer_history(ticket, settings.PIPELINE["HISTORY_SIZE"])
    return ctx


def backoff_seconds(attempt: int, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter, capped; a provider's retry-after wins when longer."""
    cfg = settings.PIPELINE
    ceiling = min(cfg["BACKOFF_CAP_SECONDS"], cfg["BACKOFF_BASE_SECONDS"] * 2 ** (attempt - 1))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    return max(delay, retry_after or 0.0)


def _trace(ticket: Ticket, stage: str, attempt: int, started: Any, t0: float, **fields: Any) -> Trace:
    return Trace.objects.create(
        ticket_id=ticket.id,
        stage=stage,
        attempt=attempt,
        started_at=started,
        finished_at=timezone.now(),
        duration_ms=(time.perf_counter() - t0) * 1000,
        **fields,
    )


def _announce(ticket: Ticket, trace: Trace, outcome: str, new_status: str) -> None:
    def send() -> None:
        stage_finished.send(
            sender=Trace,
            ticket_id=str(ticket.pk),
            client_id=ticket.client_id,
            stage=trace.stage,
            attempt=trace.attempt,
            outcome=outcome,
            duration_ms=trace.duration_ms,
            tier=trace.tier,
            model=trace.model,
            confidence=trace.confidence,
            input_tokens=trace.input_tokens,
            output_tokens=trace.output_tokens,
            cost_usd=float(trace.cost_usd),
            cache_hit=trace.cache_hit,
            new_status=new_status,
            created_at=ticket.created_at,
        )

    transaction.on_commit(send)


def _claim(ticket: Ticket, stage: str, variant: str) -> bool:
    # The cheap variant runs once; after its hand-over only the llm variant may run the stage.
    if handed_over(ticket.context, stage) != (variant == "llm"):
        return False
    if stage == "parse" and ticket.status == Status.RECEIVED:
        moved = Ticket.objects.filter(pk=ticket.pk, status=Status.RECEIVED).update(
            status=Status.PARSING, updated_at=timezone.now()
        )
        if moved:
            ticket.status = Status.PARSING
    return ticket.status == STAGE_STATUS[stage]


def _older_in_flight(ticket: Ticket) -> bool:
    if not ticket.customer_ref:
        return False
    return Ticket.objects.filter(
        client_id=ticket.client_id,
        customer_ref=ticket.customer_ref,
        created_at__lt=ticket.created_at,
        status__in=[s for s in STATUS_STAGE],
    ).exists()


def stage_run(*, ticket_id: str, stage: str, variant: str = "cpu") -> Outcome:
    """Run `stage` for the ticket if it is still waiting for it; persist what happened."""
    ticket = Ticket.objects.filter(pk=ticket_id).first()
    if ticket is None or not _claim(ticket, stage, variant):
        return Outcome("skipped")
    if stage == "decide" and _older_in_flight(ticket):
        # Serialised per customer: decide only after every older request of the same customer has
        # settled, so its history includes them and two replies never race. Not an attempt.
        # Touched, so the sweeper sees a live wait loop and does not start a second one.
        Ticket.objects.filter(pk=ticket.pk, status=ticket.status).update(updated_at=timezone.now())
        return Outcome("waiting", retry_in=settings.PIPELINE["CUSTOMER_WAIT_SECONDS"])
    attempt = ticket.stage_attempts + 1
    started, t0 = timezone.now(), time.perf_counter()
    try:
        result = STAGES[stage](ticket_input(ticket), stage_context(stage, ticket, attempt, variant))
    except StageError as exc:
        return _fail(ticket, stage, attempt, started, t0, exc)
    except Exception as exc:  # a bug or an outage we did not foresee: retried, then dead-lettered
        log.exception("stage %s crashed for ticket %s", stage, ticket.pk)
        return _fail(ticket, stage, attempt, started, t0, exc)
    return _commit(ticket, stage, attempt, started, t0, result)


def _stage_fields(stage: str, result: StageResult) -> dict[str, Any]:
    out = result.output
    if stage == "classify":
        return {"intent": out.get("intent", ""), "confidence": out.get("confidence")}
    if stage == "execute":
        return {"intent": out["intent"], "action": out["action"], "reply": out["reply"], "resolved_at": timezone.now()}
    if stage == "escalate":
        return {"reply": out["holding_reply"], "action": "escalated"}
    return {}


def _commit(ticket: Ticket, stage: str, attempt: int, started: Any, t0: float, result: StageResult) -> Outcome:
    context = {**ticket.context, stage: result.output}
    if result.handoff and not handed_over(ticket.context, stage):
        context = {**ticket.context, f"{stage}_cpu": result.output}
        new_status = ticket.status  # the same stage goes on, on the llm queue
    elif result.escalate and stage != "escalate":
        new_status = Status.ESCALATING
        detail = (result.output.get("needs_human") or {}).get("detail") or result.output.get("problem", "")
        context["escalation"] = {"reason": result.escalate, "stage": stage, "detail": detail}
    else:
        new_status = NEXT_STATUS[stage]
    if new_status != ticket.status:
        check_transition(ticket.status, new_status)
    fields = _stage_fields(stage, result) if new_status != ticket.status else {}
    with transaction.atomic():
        moved = Ticket.objects.filter(pk=ticket.pk, status=ticket.status, stage_attempts=ticket.stage_attempts).update(
            status=new_status,
            stage_attempts=0,
            context=context,
            updated_at=timezone.now(),
            cost_usd=F("cost_usd") + Decimal(str(result.cost_usd)),
            **fields,
        )
        if moved != 1:
            return Outcome("duplicate")  # another delivery of this stage got there first
        trace = _trace(
            ticket,
            stage,
            attempt,
            started,
            t0,
            status=TraceStatus.OK,
            confidence=result.confidence,
            tier=result.tier,
            model=result.model,
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            cost_usd=Decimal(str(result.cost_usd)),
            cache_hit=result.cache_hit,
            output=result.output,
        )
        if stage == "escalate":
            handler = import_string(settings.ESCALATION_HANDLER)
            handler(ticket=ticket, reason=result.output["reason"], suggestion=result.output["suggestion"])
        _after_commit(str(ticket.pk), new_status, context)
        _announce(ticket, trace, "escalated" if new_status == Status.ESCALATING else "ok", new_status)
    return Outcome("committed")


def _after_commit(ticket_id: str, new_status: str, context: dict[str, Any] | None = None) -> None:
    if new_status in TERMINAL:
        transaction.on_commit(lambda: current_app.send_task("agents.deliver_callback", args=[ticket_id, new_status]))
    else:
        transaction.on_commit(lambda: stage_enqueue(ticket_id, STATUS_STAGE[new_status], context=context))


def _fail(ticket: Ticket, stage: str, attempt: int, started: Any, t0: float, exc: Exception) -> Outcome:
    permanent = isinstance(exc, StageError) and exc.permanent
    final = permanent or attempt >= settings.PIPELINE["MAX_ATTEMPTS"]
    error = {"error_class": f"{type(exc).__module__}.{type(exc).__qualname__}", "error_message": str(exc)[:4000]}
    with transaction.atomic():
        moved = Ticket.objects.filter(pk=ticket.pk, status=ticket.status, stage_attempts=ticket.stage_attempts).update(
            stage_attempts=attempt, updated_at=timezone.now(), **({"status": Status.DEAD_LETTERED} if final else {})
        )
        if moved != 1:
            return Outcome("duplicate")
        trace = _trace(
            ticket, stage, attempt, started, t0, status=TraceStatus.FAILED if final else TraceStatus.RETRY, **error
        )
        _announce(ticket, trace, "failed" if final else "retry", Status.DEAD_LETTERED if final else ticket.status)
        if not final:
            retry_after = exc.retry_after if isinstance(exc, StageError) else None
            return Outcome("retry", retry_in=backoff_seconds(attempt, retry_after))
        reason = "permanent error" if permanent else f"out of retries after {attempt} attempts"
        DeadLetter.objects.create(
            ticket_id=ticket.pk,
            stage=stage,
            reason=reason,
            error_class=error["error_class"],
            last_error=error["error_message"],
            attempts=attempt,
        )
        classified = ticket.context.get("classify", {})
        handler = import_string(settings.ESCALATION_HANDLER)
        handler(
            ticket=ticket,
            reason="dead_letter",
            suggestion={
                "intent": classified.get("intent", ""),
                "confidence": classified.get("confidence"),
                "tier": classified.get("tier", ""),
                "plan": ticket.context.get("decide", {}).get("plan", []),
                "reply": ticket.context.get("decide", {}).get("reply", ""),
                "detail": f"{stage} failed: {reason}: {error['error_message'][:500]}",
            },
        )
        _after_commit(str(ticket.pk), Status.DEAD_LETTERED)
    log.warning("ticket %s dead-lettered at %s: %s", ticket.pk, stage, reason)
    return Outcome("dead_lettered")


def ticket_replay(*, ticket: Ticket) -> Ticket:
    """Re-run a dead-lettered ticket from the stage that failed."""
    with transaction.atomic():
        locked = Ticket.objects.select_for_update().get(pk=ticket.pk)
        if locked.status != Status.DEAD_LETTERED:
            raise IllegalTransition(f"ticket is {locked.status}; only dead_lettered tickets can be replayed")
        letter = DeadLetter.objects.filter(ticket=locked, replayed_at__isnull=True).order_by("-created_at").first()
        stage = letter.stage if letter else "parse"
        new_status = STAGE_STATUS[stage]
        check_transition(locked.status, new_status)
        locked.status, locked.stage_attempts = new_status, 0
        locked.save(update_fields=["status", "stage_attempts", "updated_at"])
        if letter:
            DeadLetter.objects.filter(pk=letter.pk).update(replayed_at=timezone.now())
        ticket_replayed.send(sender=Ticket, ticket=locked, stage=stage)
        transaction.on_commit(lambda: stage_enqueue(str(locked.pk), stage, context=locked.context))
    return locked


def ticket_resume(*, ticket: Ticket, intent: str, reply: str) -> None:
    """A person decided: resume the ticket at execute with their intent and reply."""
    with transaction.atomic():
        locked = Ticket.objects.select_for_update().get(pk=ticket.pk)
        check_transition(locked.status, Status.EXECUTING)
        locked.context = {**locked.context, "human": {"intent": intent, "reply": reply}}
        locked.status, locked.stage_attempts = Status.EXECUTING, 0
        locked.save(update_fields=["context", "status", "stage_attempts", "updated_at"])
        transaction.on_commit(lambda: stage_enqueue(str(locked.pk), "execute"))


def tickets_sweep_stuck(*, older_than_seconds: int | None = None, limit: int = 1000) -> int:
    """Re-enqueue in-flight tickets untouched for too long (their message may be lost)."""
    age = older_than_seconds if older_than_seconds is not None else settings.PIPELINE["STUCK_AFTER_SECONDS"]
    cutoff = timezone.now() - timedelta(seconds=age)
    stuck = list(
        Ticket.objects.filter(status__in=list(STATUS_STAGE), updated_at__lt=cutoff)
        .order_by("updated_at")
        .values_list("pk", "status", "context")[:limit]
    )
    for pk, status, context in stuck:
        # Touch first, so the next sweep leaves it alone for another period.
        Ticket.objects.filter(pk=pk, status=status).update(updated_at=timezone.now())
        stage_enqueue(str(pk), STATUS_STAGE[status], context=context)
    return len(stuck)
