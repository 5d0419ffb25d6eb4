"""Running one hop of one ticket: load, claim, run the pure stage, commit, choose the next hop.

Every hop is chosen from what Postgres holds (the ticket's status and context), never from the
message that carried the task, so a ticket can be resumed, swept or replayed from any stage, and a
second delivery of the same stage finds the status moved on and changes nothing. Nothing here
branches on a stage's name: what differs between stages is declared in `agents/pipeline/spec.py`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from agents.llm.scope import ticket_scope
from agents.models import Trace, TraceStatus
from agents.people import review_open
from agents.pipeline import store
from agents.pipeline.backoff import backoff_seconds
from agents.pipeline.context import stage_context, ticket_input
from agents.pipeline.dispatch import after_commit, stage_enqueue
from agents.pipeline.events import announce
from agents.pipeline.spec import HISTORY, SPEC, StageSpec, handed_over
from agents.stages.escalate import review_suggestion
from agents.stages.types import CHEAP, CLAUDE, ESCALATION, StageError, StageResult, cheap_output
from tickets.models import TERMINAL, Status, Ticket

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What became of one delivery: committed, retry later, dead-lettered, or nothing to do."""

    kind: str
    retry_in: float | None = None
    next_stage: str | None = None  # committed, and the next stage runs in this same hop (fused)


@dataclass(frozen=True)
class _Attempt:
    spec: StageSpec
    number: int
    started: datetime
    t0: float

    @classmethod
    def begin(cls, spec: StageSpec, ticket: Ticket) -> _Attempt:
        return cls(spec, ticket.stage_attempts + 1, timezone.now(), time.perf_counter())

    def trace(self, ticket: Ticket, **fields: Any) -> Trace:
        duration_ms = (time.perf_counter() - self.t0) * 1000
        return Trace(
            ticket_id=ticket.id,
            stage=self.spec.name,
            attempt=self.number,
            started_at=self.started,
            finished_at=timezone.now(),
            duration_ms=duration_ms,
            **fields,
        )


class Hop:
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
        if not store.ticket_move_and_trace(ticket, self.status, self.attempts, self.changes, self.cost, self.traces):
            return False
        for trace, outcome, new_status, context in self.announcements:
            announce(ticket, trace, outcome, new_status, context)
        self.status, self.attempts = self.changes["status"], self.changes["stage_attempts"]
        self.changes, self.cost, self.traces, self.announcements = {}, Decimal(0), [], []
        return True

    def touch(self, ticket: Ticket) -> bool:
        """Write what is pending, or else mark the row alive for the sweeper; False when the row
        had moved on."""
        if self.traces:
            return self.flush(ticket)
        return store.ticket_touch(ticket.pk, self.status, self.attempts)


def stage_run(*, ticket_id: str, stage: str, variant: str = CHEAP) -> Outcome:
    """Run `stage` for the ticket if it is still waiting for it, then the stages fused after it,
    each persisted in order; the last outcome is returned."""
    ticket = store.ticket_load(ticket_id)
    if ticket is None:
        return Outcome("skipped")
    spec = _resume_at(ticket, SPEC.by_name[stage], variant)
    hop = Hop(ticket)
    while True:
        outcome = _stage_once(ticket, spec, variant, hop)
        if outcome.next_stage is None:
            return outcome
        spec, variant = SPEC.by_name[outcome.next_stage], CHEAP


def stage_stopped(ticket_id: str, stage: str) -> Outcome:
    """The soft time limit fired in a hop (in a stage, a read or a write; the task's `on_failure`
    calls this): the attempt fails from what Postgres holds — retried once, then dead-lettered with
    the reason; nothing else of the hop is written. The connection may have been cut mid-statement:
    an unusable one is replaced."""
    if not connection.in_atomic_block:
        connection.close_if_unusable_or_obsolete()
    ticket = store.ticket_load(ticket_id)
    spec = SPEC.by_status.get(ticket.status) if ticket else None
    if ticket is None or spec is None:
        return Outcome("skipped")
    limit = settings.PIPELINE["STAGE_SOFT_TIME_LIMIT_SECONDS"]
    attempt = _Attempt.begin(spec, ticket)
    error = StageError(f"{stage}: stopped by the time limit ({limit:g} s)", permanent=attempt.number >= 2)
    outcome = _fail(ticket, attempt, error, Hop(ticket))
    if outcome.retry_in is not None:
        stage_enqueue(ticket.pk, spec.name, context=ticket.context, countdown=outcome.retry_in)
    return outcome


def _stage_once(ticket: Ticket, spec: StageSpec, variant: str, hop: Hop) -> Outcome:
    if not _claim(ticket, spec, variant):
        return Outcome("skipped")  # (nothing pending: a fused next stage is always claimable)
    history = None
    if HISTORY in spec.lends or spec.serial_per_customer:
        waiting, history = store.customer_recent(ticket, settings.PIPELINE["HISTORY_SIZE"])
        if waiting and spec.serial_per_customer:
            return _wait_for_customer(ticket, _Attempt.begin(spec, ticket), variant, hop)
    attempt = _Attempt.begin(spec, ticket)
    if ticket.stage_attempts >= settings.PIPELINE["MAX_ATTEMPTS"]:
        # Attempts that never reached a failure of their own: killed by the time limit, or lost and
        # swept again (the sweeper counts those) — no more of them.
        error = StageError(f"gave up after {ticket.stage_attempts} attempts that never finished", permanent=True)
        return _fail(ticket, attempt, error, hop)
    ctx = stage_context(spec, ticket, attempt.number, variant, history)
    try:
        with ticket_scope(ctx.scope) if ctx.scope is not None else contextlib.nullcontext():
            result = spec.fn(ticket_input(ticket), ctx)
    except StageError as exc:
        if exc.deferred and not _deferred_too_long(ticket):
            return _defer(ticket, hop, exc)
        return _fail(ticket, attempt, exc, hop)
    except SoftTimeLimitExceeded:
        raise  # the whole hop is stopped (stage_stopped)
    except Exception as exc:  # a bug or an outage we did not foresee: retried, then dead-lettered
        log.exception("stage %s crashed for ticket %s", spec.name, ticket.pk)
        return _fail(ticket, attempt, exc, hop)
    return _commit(ticket, attempt, result, variant, hop)


def _wait_for_customer(ticket: Ticket, attempt: _Attempt, variant: str, hop: Hop) -> Outcome:
    """Decided only after every older request of the same customer has settled, so its history
    includes them and two replies never race. Waiting is not an attempt; the row is touched, so the
    sweeper sees a live wait loop and does not start a second one. The interval grows with the wait;
    past the deadline a person decides (the older request may be stuck for good)."""
    cfg = settings.PIPELINE
    waited = (timezone.now() - ticket.created_at).total_seconds()
    if waited > cfg["CUSTOMER_WAIT_MAX_SECONDS"]:
        problem = f"waited {waited:.0f} s for an earlier request of the same customer to settle"
        return _commit(ticket, attempt, StageResult(output={"problem": problem}, escalate="stage_failed"), variant, hop)
    if not hop.touch(ticket):
        return Outcome("duplicate")
    interval = min(cfg["CUSTOMER_WAIT_MAX_INTERVAL_SECONDS"], max(cfg["CUSTOMER_WAIT_SECONDS"], waited / 10))
    return Outcome("waiting", retry_in=interval)


def _claim(ticket: Ticket, spec: StageSpec, variant: str) -> bool:
    # The cheap variant runs once; after its hand-over only the Claude variant may run the stage.
    if handed_over(ticket.context, spec.name) != (variant == CLAUDE):
        return False
    if ticket.status in spec.claims_from:
        # A claim in memory only: the row moves with the stage's commit (conditional on the row
        # still holding the earlier status), so the claim costs no round trip of its own.
        SPEC.check(ticket.status, spec.status)
        ticket.status = spec.status
    return ticket.status == spec.status


def _deferred_too_long(ticket: Ticket) -> bool:
    """A ticket put off for longer than DEFER_MAX_SECONDS since it arrived pays attempts again, so
    a limit that never frees up still ends in a person's hands, not in an endless wait."""
    return (timezone.now() - ticket.created_at).total_seconds() > settings.PIPELINE["DEFER_MAX_SECONDS"]


def _defer(ticket: Ticket, hop: Hop, exc: StageError) -> Outcome:
    """Nothing failed, the call was only put off (the shared rate limit is busy, a message batch is
    pending): not an attempt and no trace row; the ticket is touched so the sweeper sees it alive."""
    if not hop.touch(ticket):
        return Outcome("duplicate")
    log.info("ticket %s put off %.1f s: %s", ticket.pk, exc.retry_after or 0.0, exc)
    return Outcome("waiting", retry_in=max(exc.retry_after or 0.0, 0.1))


def _next_state(ticket: Ticket, spec: StageSpec, result: StageResult) -> tuple[str, dict[str, Any]]:
    """Where the result takes the ticket: on, to a person, or (handed over) the same stage on Claude."""
    if result.handoff and not handed_over(ticket.context, spec.name):
        return ticket.status, {**ticket.context, cheap_output(spec.name): result.output}
    context = {**ticket.context, spec.name: result.output}
    if result.escalate and not spec.opens_review:
        detail = (result.output.get("needs_human") or {}).get("detail") or result.output.get("problem", "")
        context[ESCALATION] = {"reason": result.escalate, "stage": spec.name, "detail": detail}
        return SPEC.escalation.status, context
    return spec.next_status, context


def _commit(ticket: Ticket, attempt: _Attempt, result: StageResult, variant: str, hop: Hop) -> Outcome:
    spec = attempt.spec
    new_status, context = _next_state(ticket, spec, result)
    if new_status != ticket.status:
        SPEC.check(ticket.status, new_status)
    fields = spec.writes(result) if new_status != ticket.status else {}
    cost = Decimal(str(result.cost_usd))
    trace = attempt.trace(
        ticket,
        status=TraceStatus.OK,
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
    hop.add(trace, changes, cost, "escalated" if new_status == SPEC.escalation.status else "ok")
    following = _fused_next(spec, variant, new_status, context)
    if following is None:
        # One statement is one transaction: only a stage that also opens the review needs a block.
        with transaction.atomic() if spec.opens_review else contextlib.nullcontext():
            if not hop.flush(ticket):
                return Outcome("duplicate")  # another delivery got there first: nothing written
            if spec.opens_review:
                reason, suggestion = result.output["reason"], result.output["suggestion"]
                review_open(ticket=ticket, reason=reason, suggestion=suggestion)
            after_commit(ticket.pk, new_status, context, client_id=ticket.client_id)
    # The in-memory ticket is what Postgres holds (or will hold once the hop is written), for a
    # fused next stage.
    for name, value in changes.items():
        setattr(ticket, name, value)
    ticket.cost_usd = ticket.cost_usd + cost
    return Outcome("committed", next_stage=following.name if following else None)


def _fail(ticket: Ticket, attempt: _Attempt, exc: Exception, hop: Hop) -> Outcome:
    if not hop.flush(ticket):  # the stages before it in this hop are done: written first
        return Outcome("duplicate")
    permanent = isinstance(exc, StageError) and exc.permanent
    final = permanent or attempt.number >= settings.PIPELINE["MAX_ATTEMPTS"]
    error = {"error_class": f"{type(exc).__module__}.{type(exc).__qualname__}", "error_message": str(exc)[:4000]}
    with transaction.atomic():
        if not store.attempt_failed(ticket.pk, hop.status, hop.attempts, attempt=attempt.number, final=final):
            return Outcome("duplicate")
        trace = attempt.trace(ticket, status=TraceStatus.FAILED if final else TraceStatus.RETRY, **error)
        trace.save(force_insert=True)
        announce(ticket, trace, "failed" if final else "retry", Status.DEAD_LETTERED if final else ticket.status)
        if not final:
            retry_after = exc.retry_after if isinstance(exc, StageError) else None
            return Outcome("retry", retry_in=backoff_seconds(attempt.number, retry_after))
        reason = "permanent error" if permanent else f"out of retries after {attempt.number} attempts"
        _dead_letter(ticket, attempt, reason, error)
    log.warning("ticket %s dead-lettered at %s: %s", ticket.pk, attempt.spec.name, reason)
    return Outcome("dead_lettered")


def _dead_letter(ticket: Ticket, attempt: _Attempt, reason: str, error: dict[str, str]) -> None:
    """Record the dead letter and hand the ticket to a person (inside the failing write's transaction)."""
    stage = attempt.spec.name
    store.dead_letter_create(ticket_id=ticket.pk, stage=stage, reason=reason, error=error, attempts=attempt.number)
    detail = f"{stage} failed: {reason}: {error['error_message'][:500]}"
    review_open(ticket=ticket, reason="dead_letter", suggestion=review_suggestion(ticket.context, detail))
    after_commit(ticket.pk, Status.DEAD_LETTERED, client_id=ticket.client_id)


# --- fused hops -------------------------------------------------------------------------------------
# Cheap stages run one after another in the same task instead of each being published to its own
# queue: each still claims, writes its own trace, and the next one is still chosen from what the hop
# persists, so sweep, replay and redelivery work as before. PIPELINE["FUSE"] groups them: '+' joins
# the stages of a group, ',' separates groups, "" means one hop per stage; unset, every stage is in
# one group and only a stage's spec (`fusable`) sends it to its own queue. Trade-offs:
# docs/performance.md.


@lru_cache(maxsize=8)
def _groups(spec: str | None) -> dict[str, int]:
    """'parse+classify+decide,execute+escalate' → stage: group number."""
    if spec is None:
        spec = "+".join(SPEC.names)
    return {stage: i for i, group in enumerate(spec.split(",")) for stage in group.split("+") if stage}


def fused(current: StageSpec, following: StageSpec, context: dict[str, Any]) -> bool:
    """Whether `following` runs in the same hop as `current`: the same group, and its spec says it
    may (an execute whose plan calls a downstream API waits on the network: never fused)."""
    groups = _groups(settings.PIPELINE.get("FUSE"))
    group = groups.get(current.name)
    if current.name == following.name or group is None or group != groups.get(following.name):
        return False
    return following.fusable(context)


def _fused_next(spec: StageSpec, variant: str, new_status: str, context: dict[str, Any]) -> StageSpec | None:
    following = SPEC.by_status.get(new_status)
    if variant != CHEAP or following is None or handed_over(context, following.name):
        return None
    return following if fused(spec, following, context) else None


def _resume_at(ticket: Ticket, spec: StageSpec, variant: str) -> StageSpec:
    """A fused hop redelivered after some of its stages committed carries on where they stopped."""
    current = SPEC.by_status.get(ticket.status)
    if variant != CHEAP or current is None or current.name == spec.name:
        return spec
    if SPEC.order[current.name] > SPEC.order[spec.name] and fused(spec, current, ticket.context):
        return current
    return spec
