"""Running one stage of one ticket: load, call the pure stage, persist the outcome atomically.

Every hop is chosen from what Postgres holds (the ticket's status and context), never from the
message that carried the task, so a ticket can be resumed, swept or replayed from any stage, and
a second delivery of the same stage finds the status moved on and changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.dispatch import Signal
from django.utils import timezone
from django.utils.module_loading import import_string

from agents.callbacks import callback_due, drain_schedule
from agents.catalog import get_catalog
from agents.models import DeadLetter, Stage, Trace, TraceStatus
from agents.stages import STAGES
from agents.stages.types import StageContext, StageError, StageResult, TicketInput
from agents.tools import OFFLINE_TOOLS, LedgerTools
from tickets.models import SETTLED_STATUSES, TERMINAL, IllegalTransition, Status, Ticket, check_transition

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
# created_at (the ticket's, for end-to-end latency), path ("core" | "llm" | "human", see settled_path).
stage_finished = Signal()

# Sent after a dead letter is replayed, so the review queue can close its dead-letter review
# (agents does not import reviews).
ticket_replayed = Signal()


@dataclass(frozen=True)
class Outcome:
    """What became of one delivery: committed, retry later, dead-lettered, or nothing to do."""

    kind: str
    retry_in: float | None = None
    next_stage: str | None = None  # committed, and the next stage runs in this same hop (fused)


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


# Two reads on every hop, written once as SQL: the ORM spends more CPU building them (~0.4 and
# ~0.8 ms) than Postgres spends answering them.
_TICKET = Ticket._meta.db_table
_RECENT_SQL = (
    f'SELECT "created_at", "status", "intent", left("reply", 200), EXISTS ('
    f'SELECT 1 FROM "{_TICKET}" o WHERE o."client_id" = %s AND o."customer_ref" = %s AND o."created_at" < %s '
    f'AND o."status" = ANY(%s)) FROM "{_TICKET}" WHERE "client_id" = %s AND "customer_ref" = %s '
    f'AND "created_at" < %s ORDER BY "created_at" DESC LIMIT %s'
)


def customer_recent(ticket: Ticket, limit: int) -> tuple[bool, list[dict[str, Any]]]:
    """Whether an older request of the same customer is still in flight, and the customer's last
    interactions (compact, never the whole transcript) — one round trip for both (the index
    `ticket_customer`; no older row at all means nothing older is in flight either)."""
    if not ticket.customer_ref:
        return False, []
    who = [ticket.client_id, ticket.customer_ref, ticket.created_at]
    with connection.cursor() as cursor:
        cursor.execute(_RECENT_SQL, [*who, list(STATUS_STAGE), *who, max(limit, 1)])
        rows = cursor.fetchall()
    history = [
        {"at": at.isoformat(), "status": status, "intent": intent, "reply": reply}
        for at, status, intent, reply, _ in rows[:limit]
    ]
    return bool(rows and rows[0][4]), history


_LOAD_FIELDS = Ticket._meta.concrete_fields
_LOAD_COLUMNS = ", ".join(f'"{field.column}"' for field in _LOAD_FIELDS)
_LOAD_SQL = f'SELECT {_LOAD_COLUMNS} FROM "{_TICKET}" WHERE "id" = %s'
_LOAD_ATTNAMES = [f.attname for f in _LOAD_FIELDS]
_LOAD_CONVERTERS = [(i, f) for i, f in enumerate(_LOAD_FIELDS) if hasattr(f, "from_db_value")]


def ticket_load(ticket_id: str) -> Ticket | None:
    """The ticket as the ORM would load it, or None (also for an id that is not a UUID)."""
    try:
        pk = uuid.UUID(str(ticket_id))
    except ValueError:
        return None
    with connection.cursor() as cursor:
        cursor.execute(_LOAD_SQL, [pk])
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for i, field in _LOAD_CONVERTERS:
        values[i] = field.from_db_value(values[i], None, connection)
    return Ticket.from_db(connection.alias, _LOAD_ATTNAMES, values)


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


def stage_context(
    stage: str, ticket: Ticket, attempt: int, variant: str = "cpu", history: list[dict[str, Any]] | None = None
) -> StageContext:
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
    elif stage == "decide":
        ctx.can_handoff = settings.LLM_ENABLED  # intents without a canned reply get one drafted
    if stage in ("execute", "escalate"):
        ctx.tools = LedgerTools(str(ticket.id))
    if stage == "decide":
        ctx.history = history if history is not None else customer_recent(ticket, settings.PIPELINE["HISTORY_SIZE"])[1]
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


def settled_path(context: dict[str, Any]) -> str:
    """How a ticket got where it is: `human` (a reviewer decided), `llm` (a stage was handed over
    to Claude) or `core` (the cheap tiers alone) — read from the context just committed."""
    if "human" in context:
        return "human"
    return "llm" if any(f"{stage}_cpu" in context for stage in STAGE_STATUS) else "core"


def _announce(
    ticket: Ticket, trace: Trace, outcome: str, new_status: str, context: dict[str, Any] | None = None
) -> None:
    path = settled_path(ticket.context if context is None else context)

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
            path=path,
        )

    transaction.on_commit(send)


def _claim(ticket: Ticket, stage: str, variant: str) -> bool:
    # The cheap variant runs once; after its hand-over only the llm variant may run the stage.
    if handed_over(ticket.context, stage) != (variant == "llm"):
        return False
    if stage == "parse" and ticket.status == Status.RECEIVED:
        # received → parsing in memory only: the row moves with parse's commit (conditional on
        # the row still being `received`), so the claim costs no round trip of its own.
        check_transition(Status.RECEIVED, Status.PARSING)
        ticket.status = Status.PARSING
    return ticket.status == STAGE_STATUS[stage]


class _Hop:
    """What one task has computed and not yet written. The stages of a fused hop go to Postgres in
    one statement at the end of the hop (or before anything else is written: a wait, a failure, a
    hand-over, an escalation's review): the ticket moves from the state it was read in to the last
    stage's, with one trace row per stage, or — when another delivery moved it first — nothing is
    written at all. A hop cut short (a worker killed) leaves the row as it was read, and its
    redelivery computes the same stages again (they are pure; the ledger returns recorded effects)."""

    def __init__(self, ticket: Ticket):
        self.status, self.attempts = ticket.status, ticket.stage_attempts  # what the row holds
        self.changes: dict[str, Any] = {}
        self.cost = Decimal(0)
        self.traces: list[Trace] = []
        self.announcements: list[tuple[Trace, str, str, dict[str, Any]]] = []

    def add(self, trace: Trace, changes: dict[str, Any], cost: Decimal, outcome: str) -> None:
        self.traces.append(trace)
        self.changes.update(changes)
        self.cost += cost
        self.announcements.append((trace, outcome, changes["status"], changes["context"]))

    def flush(self, ticket: Ticket) -> bool:
        """Write what is pending (a no-op when nothing is); False when the row had moved on."""
        if not self.traces:
            return True
        if not _move_and_trace(ticket, self.status, self.attempts, self.changes, self.cost, self.traces):
            return False
        for trace, outcome, new_status, context in self.announcements:
            _announce(ticket, trace, outcome, new_status, context)
        self.status, self.attempts = self.changes["status"], self.changes["stage_attempts"]
        self.changes, self.cost, self.traces, self.announcements = {}, Decimal(0), [], []
        return True

    def touch(self, ticket: Ticket) -> bool:
        """Write what is pending, or else mark the row alive (`updated_at`) for the sweeper; False
        when the row had moved on."""
        if self.traces:
            return self.flush(ticket)
        return bool(
            Ticket.objects.filter(pk=ticket.pk, status=self.status, stage_attempts=self.attempts).update(
                updated_at=timezone.now()
            )
        )


def stage_run(*, ticket_id: str, stage: str, variant: str = "cpu") -> Outcome:
    """Run `stage` for the ticket if it is still waiting for it, then the stages fused after it
    (celeryconfig.PIPELINE_FUSE), each persisted on its own; the last outcome is returned."""
    ticket = ticket_load(ticket_id)
    if ticket is None:
        return Outcome("skipped")
    stage = _resume_at(ticket, stage, variant)
    hop = _Hop(ticket)
    while True:
        outcome = _stage_once(ticket, stage, variant, hop)
        if outcome.next_stage is None:
            return outcome
        stage, variant = outcome.next_stage, "cpu"


def _stage_once(ticket: Ticket, stage: str, variant: str, hop: _Hop) -> Outcome:
    if not _claim(ticket, stage, variant):
        return Outcome("skipped")  # (nothing pending: a fused next stage is always claimable)
    history = None
    if stage == "decide":
        waiting, history = customer_recent(ticket, settings.PIPELINE["HISTORY_SIZE"])
        if waiting:
            # Serialised per customer: decide only after every older request of the same customer
            # has settled, so its history includes them and two replies never race. Not an attempt.
            # Touched, so the sweeper sees a live wait loop and does not start a second one.
            if not hop.touch(ticket):
                return Outcome("duplicate")
            return Outcome("waiting", retry_in=settings.PIPELINE["CUSTOMER_WAIT_SECONDS"])
    attempt = ticket.stage_attempts + 1
    started, t0 = timezone.now(), time.perf_counter()
    try:
        result = STAGES[stage](ticket_input(ticket), stage_context(stage, ticket, attempt, variant, history))
    except StageError as exc:
        if getattr(exc, "deferred", False) and not _deferred_too_long(ticket):
            return _defer(ticket, hop, exc)
        return _fail(ticket, stage, attempt, started, t0, exc, hop)
    except Exception as exc:  # a bug or an outage we did not foresee: retried, then dead-lettered
        log.exception("stage %s crashed for ticket %s", stage, ticket.pk)
        return _fail(ticket, stage, attempt, started, t0, exc, hop)
    return _commit(ticket, stage, attempt, started, t0, result, variant, hop)


def _deferred_too_long(ticket: Ticket) -> bool:
    """A ticket put off for longer than DEFER_MAX_SECONDS since it arrived pays attempts again, so
    a limit that never frees up still ends in a person's hands, not in an endless wait."""
    return (timezone.now() - ticket.created_at).total_seconds() > settings.PIPELINE["DEFER_MAX_SECONDS"]


def _defer(ticket: Ticket, hop: _Hop, exc: StageError) -> Outcome:
    """Nothing failed, the call was only put off (the shared rate limit is busy, a message batch is
    pending): not an attempt and no trace row; the ticket is touched so the sweeper sees it alive."""
    if not hop.touch(ticket):
        return Outcome("duplicate")
    log.info("ticket %s put off %.1f s: %s", ticket.pk, exc.retry_after or 0.0, exc)
    return Outcome("waiting", retry_in=max(exc.retry_after or 0.0, 0.1))


# --- fused hops -------------------------------------------------------------------------------------
# Cheap stages may run one after another in the same task instead of each being published to its own
# queue: each still claims, commits its own transaction and writes its own trace, and the next one
# is still chosen from what was just persisted, so sweep, replay and redelivery work as before.
STAGE_ORDER = ("parse", "classify", "decide", "execute", "escalate")


@lru_cache(maxsize=8)
def _groups(spec: str) -> dict[str, int]:
    """'parse+classify+decide,execute+escalate' → stage: group number."""
    return {stage: i for i, group in enumerate(spec.split(",")) for stage in group.split("+") if stage}


def fused(current: str, following: str, context: dict[str, Any]) -> bool:
    """Whether `following` runs in the same hop as `current`: the same group, and never a stage
    that would wait on the network (an execute whose plan calls a downstream API)."""
    groups = _groups(str(current_app.conf.get("PIPELINE_FUSE") or ""))
    if current == following or groups.get(current) is None or groups.get(current) != groups.get(following):
        return False
    if following == "execute":
        plan = (context.get("decide") or {}).get("plan") or []
        return "human" not in context and all(action.get("tool") in OFFLINE_TOOLS for action in plan)
    return True


def _fused_next(stage: str, variant: str, new_status: str, context: dict[str, Any]) -> str | None:
    following = STATUS_STAGE.get(new_status)
    if variant != "cpu" or following is None or handed_over(context, following):
        return None
    return following if fused(stage, following, context) else None


def _resume_at(ticket: Ticket, stage: str, variant: str) -> str:
    """A fused hop redelivered after some of its stages committed carries on where they stopped."""
    current = STATUS_STAGE.get(ticket.status)
    if variant != "cpu" or current is None or current == stage or current not in STAGE_ORDER:
        return stage
    if STAGE_ORDER.index(current) > STAGE_ORDER.index(stage) and fused(stage, current, ticket.context):
        return current
    return stage


def _stage_fields(stage: str, result: StageResult) -> dict[str, Any]:
    out = result.output
    if stage == "classify":
        return {"intent": out.get("intent", ""), "confidence": out.get("confidence")}
    if stage == "execute":
        return {"intent": out["intent"], "action": out["action"], "reply": out["reply"], "resolved_at": timezone.now()}
    if stage == "escalate":
        return {"reply": out["holding_reply"], "action": "escalated"}
    return {}


def _commit(
    ticket: Ticket,
    stage: str,
    attempt: int,
    started: Any,
    t0: float,
    result: StageResult,
    variant: str = "cpu",
    hop: _Hop | None = None,
) -> Outcome:
    hop = hop if hop is not None else _Hop(ticket)
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
    cost = Decimal(str(result.cost_usd))
    trace = Trace(
        ticket_id=ticket.id,
        stage=stage,
        attempt=attempt,
        status=TraceStatus.OK,
        started_at=started,
        finished_at=timezone.now(),
        duration_ms=(time.perf_counter() - t0) * 1000,
        confidence=result.confidence,
        tier=result.tier,
        model=result.model,
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        cost_usd=cost,
        cache_hit=result.cache_hit,
        output=result.output,
    )
    changes = {"status": new_status, "stage_attempts": 0, "context": context, "updated_at": timezone.now(), **fields}
    if new_status in TERMINAL:
        changes["callback_due_at"] = changes["updated_at"]
    hop.add(trace, changes, cost, "escalated" if new_status == Status.ESCALATING else "ok")
    following = _fused_next(stage, variant, new_status, context)
    if following is None:
        # One statement is one transaction: only escalate, which also opens the review, needs a block.
        with transaction.atomic() if stage == "escalate" else contextlib.nullcontext():
            if not hop.flush(ticket):
                return Outcome("duplicate")  # another delivery got there first: nothing written
            if stage == "escalate":
                handler = import_string(settings.ESCALATION_HANDLER)
                handler(ticket=ticket, reason=result.output["reason"], suggestion=result.output["suggestion"])
            _after_commit(str(ticket.pk), new_status, context)
    # The in-memory ticket is what Postgres holds (or will hold when the hop is written), for a
    # fused next stage.
    for name, value in changes.items():
        setattr(ticket, name, value)
    ticket.cost_usd = ticket.cost_usd + cost
    return Outcome("committed", next_stage=following)


# --- the write of a hop: one statement --------------------------------------------------------------
# The conditional update of the ticket and the insert of its trace rows go to Postgres as one
# statement (a data-modifying CTE): the traces are written only if the update matched, in the same
# transaction by construction, in one round trip and without the ORM building queries per stage.
_TRACE_FIELDS = [f for f in Trace._meta.concrete_fields if not f.primary_key and f.attname != "ticket_id"]


# The trace rows go as one JSON parameter (`jsonb_to_recordset`): the statement is the same for any
# number of stages, short, with few parameters, so psycopg keeps its parsed form and Postgres its
# plan (a VALUES row per trace made a statement of 16 parameters a stage that psycopg parsed again
# on every hop), and one `json.dumps` replaces Django's conversion of every value.
_TRACE_OUTPUT_ENCODER = Trace._meta.get_field("output").encoder


@lru_cache(maxsize=64)
def _move_sql(names: tuple[str, ...]) -> str:
    def cast(field: Any) -> str:
        return f"CAST(%s AS {field.db_type(connection)})"

    ticket_fields = [Ticket._meta.get_field(name) for name in names]
    sets = ", ".join(f'"{f.column}" = {cast(f)}' for f in ticket_fields)
    cost = Ticket._meta.get_field("cost_usd")
    columns = ", ".join(f'"{f.column}"' for f in _TRACE_FIELDS)
    record = ", ".join(f'"{f.column}" {f.db_type(connection)}' for f in _TRACE_FIELDS)
    values = ", ".join(f'v."{f.column}"' for f in _TRACE_FIELDS)
    return (
        f'WITH moved AS (UPDATE "{Ticket._meta.db_table}" SET {sets}, "{cost.column}" = "{cost.column}" + {cast(cost)} '
        f'WHERE "id" = %s AND "status" = %s AND "stage_attempts" = %s RETURNING "id") '
        f'INSERT INTO "{Trace._meta.db_table}" ("ticket_id", {columns}) '
        f'SELECT moved."id", {values} '
        f"FROM moved CROSS JOIN ROWS FROM (jsonb_to_recordset(CAST(%s AS jsonb)) AS ({record})) "
        f"WITH ORDINALITY AS v({columns}, n) "
        f'ORDER BY v.n RETURNING "id"'
    )


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _move_and_trace(
    ticket: Ticket, status: str, attempts: int, changes: dict[str, Any], cost: Decimal, traces: list[Trace]
) -> bool:
    """Move the ticket if its row still holds `status` and `attempts`, and write the traces; False
    when another delivery got there first (nothing written)."""
    names = tuple(changes)
    params = [Ticket._meta.get_field(n).get_db_prep_save(changes[n], connection) for n in names]
    params.append(Ticket._meta.get_field("cost_usd").get_db_prep_save(cost, connection))
    params += [ticket.pk, status, attempts]
    rows = [{f.column: _json_value(getattr(trace, f.attname)) for f in _TRACE_FIELDS} for trace in traces]
    params.append(json.dumps(rows, cls=_TRACE_OUTPUT_ENCODER))
    with connection.cursor() as cursor:
        cursor.execute(_move_sql(names), params)
        ids = cursor.fetchall()
    if not ids:
        return False
    for trace, row in zip(traces, ids, strict=True):
        trace.id, trace._state.adding = row[0], False
    return True


def _after_commit(ticket_id: str, new_status: str, context: dict[str, Any] | None = None) -> None:
    if new_status in TERMINAL:
        transaction.on_commit(callback_due)
    else:
        transaction.on_commit(lambda: stage_enqueue(ticket_id, STATUS_STAGE[new_status], context=context))


def _fail(
    ticket: Ticket, stage: str, attempt: int, started: Any, t0: float, exc: Exception, hop: _Hop | None = None
) -> Outcome:
    hop = hop if hop is not None else _Hop(ticket)
    if not hop.flush(ticket):  # the stages before it in this hop are done: written first
        return Outcome("duplicate")
    permanent = isinstance(exc, StageError) and exc.permanent
    final = permanent or attempt >= settings.PIPELINE["MAX_ATTEMPTS"]
    error = {"error_class": f"{type(exc).__module__}.{type(exc).__qualname__}", "error_message": str(exc)[:4000]}
    with transaction.atomic():
        moved = Ticket.objects.filter(pk=ticket.pk, status=hop.status, stage_attempts=hop.attempts).update(
            stage_attempts=attempt,
            updated_at=timezone.now(),
            **({"status": Status.DEAD_LETTERED, "callback_due_at": timezone.now()} if final else {}),
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
        # The dead letter is no longer the outcome: a callback still due for it is dropped (the
        # client is told the replay's outcome), or a drain would tell it of an in-flight state.
        locked.status, locked.stage_attempts, locked.callback_due_at = new_status, 0, None
        locked.save(update_fields=["status", "stage_attempts", "callback_due_at", "updated_at"])
        if letter:
            DeadLetter.objects.filter(pk=letter.pk).update(replayed_at=timezone.now())
        ticket_replayed.send(sender=Ticket, ticket=locked, stage=stage)
        transaction.on_commit(lambda: stage_enqueue(str(locked.pk), stage, context=locked.context))
    return locked


def _decision_trace(ticket: Ticket, decision: dict[str, Any], started_at: Any = None) -> Trace:
    """The trace row of a person's decision: the ticket's history shows who decided what, and when."""
    now = timezone.now()
    started = started_at or now
    return Trace.objects.create(
        ticket_id=ticket.pk,
        stage=Stage.REVIEW,
        attempt=1,
        status=TraceStatus.OK,
        started_at=started,
        finished_at=now,
        duration_ms=max((now - started).total_seconds() * 1000, 0.0),
        tier="human",
        output=decision,
    )


def ticket_resume(
    *, ticket: Ticket, intent: str, reply: str, reviewer: str = "", decision: str = "correct", started_at: Any = None
) -> None:
    """A person decided: resume the ticket at execute with their intent and reply."""
    with transaction.atomic():
        locked = Ticket.objects.select_for_update().get(pk=ticket.pk)
        check_transition(locked.status, Status.EXECUTING)
        locked.context = {**locked.context, "human": {"intent": intent, "reply": reply}}
        locked.status, locked.stage_attempts = Status.EXECUTING, 0
        locked.save(update_fields=["context", "status", "stage_attempts", "updated_at"])
        _decision_trace(
            locked, {"decision": decision, "intent": intent, "reply": reply, "reviewer": reviewer}, started_at
        )
        transaction.on_commit(lambda: stage_enqueue(str(locked.pk), "execute"))


def ticket_dismiss(*, ticket: Ticket, reason: str, reviewer: str = "", started_at: Any = None) -> Ticket:
    """A person closed a waiting ticket without acting: resolved, action "dismissed", no further
    reply; the client is told, as for any other terminal state. IllegalTransition unless the
    ticket waits for a person (awaiting review, or dead-lettered)."""
    with transaction.atomic():
        locked = Ticket.objects.select_for_update().get(pk=ticket.pk)
        if locked.status not in (Status.AWAITING_REVIEW, Status.DEAD_LETTERED):
            raise IllegalTransition(f"ticket is {locked.status}; only a waiting ticket can be dismissed")
        check_transition(locked.status, Status.RESOLVED)
        locked.status, locked.action, locked.resolved_at = Status.RESOLVED, "dismissed", timezone.now()
        locked.callback_due_at = locked.resolved_at
        locked.context = {**locked.context, "human": {"decision": "dismiss", "reason": reason}}
        locked.save(update_fields=["status", "action", "resolved_at", "callback_due_at", "context", "updated_at"])
        trace = _decision_trace(locked, {"decision": "dismiss", "reason": reason, "reviewer": reviewer}, started_at)
        _announce(locked, trace, "ok", Status.RESOLVED, locked.context)
        _after_commit(str(locked.pk), Status.RESOLVED)
    return locked


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
        # Touch first, so the next sweep leaves it alone for another period.
        Ticket.objects.filter(pk=pk, status=status).update(updated_at=timezone.now())
        stage_enqueue(str(pk), STATUS_STAGE[status], context=context)
    return len(stuck) + callbacks_sweep_lost(cutoff=cutoff, limit=limit)


def callbacks_sweep_lost(*, cutoff: Any, limit: int = 1000) -> int:
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
