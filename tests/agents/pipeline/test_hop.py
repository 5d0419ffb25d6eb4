"""A fused hop: the cheap stages of one task go to Postgres in one statement, or not at all.

Runs the pipeline service in the test process against real Postgres (no broker needed: what a
stage would enqueue is published only on commit, and these tests never commit).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents.intents.catalog import get_catalog
from agents.llm.base import LimiterBusy
from agents.models import DeadLetter, SideEffect, Trace
from agents.pipeline import runner as pipeline
from agents.pipeline import sweeper
from agents.pipeline.spec import SPEC
from agents.stages.types import StageError
from tests.factories import client_with_token, ticket_make
from tickets.models import Status, Ticket

ALL_FUSED = "parse+classify+decide+execute+escalate"


@pytest.fixture
def fused(intents: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(settings.PIPELINE, "FUSE", ALL_FUSED)


@pytest.fixture
def ticket(db: Any) -> Ticket:
    client, _ = client_with_token()
    return ticket_make(client, body="My card still hasn't arrived, where is it?", customer_ref="alice")


def stages_of(ticket: Ticket) -> list[tuple[str, str]]:
    return list(Trace.objects.filter(ticket=ticket).order_by("started_at", "id").values_list("stage", "status"))


def replace_stage(spec: Any, stage: str, fn: Any) -> None:
    """Run `fn` in place of the stage's function: the spec the runner reads names it (the
    `stage_spec` fixture puts the real stages back after the test)."""
    spec.load(tuple(dataclasses.replace(s, fn=fn) if s.name == stage else s for s in spec.stages))


def test_the_trace_rows_hold_exactly_what_the_hop_computed(fused, ticket, monkeypatch):
    # The rows go to Postgres as one JSON document: every type must come back as it was.
    written: list[Trace] = []
    add = pipeline.Hop.add

    def keep(self, trace, *args, **kwargs):
        written.append(trace)
        return add(self, trace, *args, **kwargs)

    monkeypatch.setattr(pipeline.Hop, "add", keep)
    pipeline.stage_run(ticket_id=str(ticket.pk), stage="parse")

    fields = [f.attname for f in Trace._meta.concrete_fields]
    stored = {row.pk: row for row in Trace.objects.filter(ticket=ticket)}
    assert len(written) == len(stored) == 4
    for trace in written:
        assert {f: getattr(stored[trace.pk], f) for f in fields} == {f: getattr(trace, f) for f in fields}


def test_a_resolved_hop_is_one_write_with_a_trace_row_per_stage(fused, ticket):
    get_catalog()  # loaded once per process, not per ticket
    with CaptureQueriesContext(connection) as queries:
        outcome = pipeline.stage_run(ticket_id=str(ticket.pk), stage="parse")

    assert outcome.kind == "committed"
    ticket.refresh_from_db()
    assert ticket.status == Status.RESOLVED and ticket.intent == "card_arrival"
    assert ticket.callback_due_at == ticket.updated_at  # on the sweeper's list until its callback is settled
    assert stages_of(ticket) == [(s, "ok") for s in ("parse", "classify", "decide", "execute")]
    writes = [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith(("UPDATE", "WITH", "INSERT"))]
    # the ledger's record of the reply, then the ticket's move with its four trace rows
    assert len(writes) == 2, writes
    assert writes[0].startswith('INSERT INTO "agents_sideeffect"') and writes[1].startswith("WITH moved")
    reads = [q["sql"] for q in queries if q["sql"].startswith("SELECT") and '"tickets_ticket"' in q["sql"]]
    assert len(reads) == 2, reads  # the ticket, and the customer's history at decide (the local tier may
    # also look for a newly activated model version, every few seconds: not per ticket)


def test_a_hop_that_loses_the_race_writes_nothing(fused, ticket, monkeypatch, stage_spec):
    decide = SPEC.by_name["decide"].fn

    def decide_while_another_delivery_finishes(t: Any, ctx: Any) -> Any:
        Ticket.objects.filter(pk=t.id).update(status=Status.RESOLVED, reply="the other delivery's")
        return decide(t, ctx)

    replace_stage(stage_spec, "decide", decide_while_another_delivery_finishes)

    outcome = pipeline.stage_run(ticket_id=str(ticket.pk), stage="parse")

    assert outcome.kind == "duplicate"
    ticket.refresh_from_db()
    assert ticket.status == Status.RESOLVED and ticket.reply == "the other delivery's"
    assert stages_of(ticket) == []  # neither parse's nor classify's trace: the hop wrote nothing


def test_a_failure_mid_hop_writes_the_stages_before_it_then_the_retry_carries_on(
    fused, ticket, monkeypatch, stage_spec
):
    decide = SPEC.by_name["decide"].fn

    def flaky(t: Any, ctx: Any) -> Any:
        raise StageError("the history service timed out")

    replace_stage(stage_spec, "decide", flaky)
    outcome = pipeline.stage_run(ticket_id=str(ticket.pk), stage="parse")

    assert outcome.kind == "retry" and outcome.retry_in is not None
    ticket.refresh_from_db()
    assert ticket.status == "deciding" and ticket.stage_attempts == 1
    assert stages_of(ticket) == [("parse", "ok"), ("classify", "ok"), ("decide", "retry")]

    replace_stage(stage_spec, "decide", decide)
    assert pipeline.stage_run(ticket_id=str(ticket.pk), stage="decide").kind == "committed"
    ticket.refresh_from_db()
    assert ticket.status == Status.RESOLVED and ticket.stage_attempts == 0
    assert stages_of(ticket)[-2:] == [("decide", "ok"), ("execute", "ok")]


def test_a_worker_killed_mid_hop_leaves_the_row_as_read_and_the_redelivery_replies_once(
    fused, ticket, monkeypatch, stage_spec
):
    execute = SPEC.by_name["execute"].fn

    def execute_then_die(t: Any, ctx: Any) -> Any:
        execute(t, ctx)  # the reply is recorded in the ledger ...
        raise KeyboardInterrupt  # ... and the process dies before the hop is written

    replace_stage(stage_spec, "execute", execute_then_die)
    with pytest.raises(KeyboardInterrupt):
        pipeline.stage_run(ticket_id=str(ticket.pk), stage="parse")

    ticket.refresh_from_db()
    assert ticket.status == Status.RECEIVED and stages_of(ticket) == []
    assert SideEffect.objects.filter(ticket=ticket, tool="reply").count() == 1

    replace_stage(stage_spec, "execute", execute)
    assert pipeline.stage_run(ticket_id=str(ticket.pk), stage="parse").kind == "committed"  # acks_late
    ticket.refresh_from_db()
    assert ticket.status == Status.RESOLVED
    assert [s for s, _ in stages_of(ticket)] == ["parse", "classify", "decide", "execute"]
    reply = SideEffect.objects.get(ticket=ticket, tool="reply")
    assert reply.attempts == 1  # recorded once; the redelivery found it done
    assert ticket.context["execute"]["results"][0]["replayed"] is True


def test_without_fusion_each_stage_is_its_own_write(intents, ticket, monkeypatch):
    monkeypatch.setitem(settings.PIPELINE, "FUSE", "")

    assert pipeline.stage_run(ticket_id=str(ticket.pk), stage="parse").kind == "committed"

    ticket.refresh_from_db()
    assert ticket.status == "classifying" and stages_of(ticket) == [("parse", "ok")]


def test_a_call_put_off_by_the_rate_limit_is_not_an_attempt(fused, ticket, monkeypatch, stage_spec):
    def busy(t: Any, ctx: Any) -> Any:
        raise LimiterBusy("no room in the shared limit", retry_after=0.7)

    replace_stage(stage_spec, "classify", busy)

    outcome = pipeline.stage_run(ticket_id=str(ticket.pk), stage="parse")

    assert (outcome.kind, outcome.retry_in) == ("waiting", 0.7)
    ticket.refresh_from_db()
    assert ticket.status == "classifying" and ticket.stage_attempts == 0
    assert stages_of(ticket) == [("parse", "ok")]  # parse is written; the wait leaves no row


def test_a_ticket_put_off_for_too_long_pays_attempts_again(fused, ticket, monkeypatch, settings, stage_spec):
    settings.PIPELINE = {**settings.PIPELINE, "DEFER_MAX_SECONDS": 60}
    Ticket.objects.filter(pk=ticket.pk).update(created_at=timezone.now() - timedelta(seconds=61))

    def busy(t: Any, ctx: Any) -> Any:
        raise LimiterBusy("no room in the shared limit", retry_after=0.7)

    replace_stage(stage_spec, "classify", busy)

    assert pipeline.stage_run(ticket_id=str(ticket.pk), stage="parse").kind == "retry"
    ticket.refresh_from_db()
    assert ticket.stage_attempts == 1 and stages_of(ticket)[-1] == ("classify", "retry")


def test_a_hop_stopped_by_the_time_limit_is_retried_once_then_dead_lettered(fused, ticket, stage_spec):
    def runaway(t: Any, ctx: Any) -> Any:
        raise SoftTimeLimitExceeded()  # what Celery raises in the task when the soft limit fires

    replace_stage(stage_spec, "classify", runaway)

    with pytest.raises(SoftTimeLimitExceeded):  # out of the task: its on_failure calls stage_stopped
        pipeline.stage_run(ticket_id=str(ticket.pk), stage="parse")
    first = pipeline.stage_stopped(str(ticket.pk), "classify")
    assert first.kind == "retry"  # the hop is cut short: nothing of it written but the failed attempt
    assert stages_of(ticket) == [("parse", "retry")]
    with pytest.raises(SoftTimeLimitExceeded):
        pipeline.stage_run(ticket_id=str(ticket.pk), stage="parse")
    assert pipeline.stage_stopped(str(ticket.pk), "classify").kind == "dead_lettered"

    ticket.refresh_from_db()
    assert ticket.status == Status.DEAD_LETTERED
    letter = DeadLetter.objects.get(ticket=ticket)
    assert letter.stage == "parse" and letter.attempts == 2
    assert "classify: stopped by the time limit" in letter.last_error


def test_a_hop_that_never_finishes_ends_once_the_sweeper_has_counted_its_attempts(intents, ticket, settings):
    # Killed by the hard limit (or lost) again and again: each sweep counts an attempt, and the
    # runner gives up when they are spent, instead of looping every sweep for ever.
    Ticket.objects.filter(pk=ticket.pk).update(status="classifying", context={"parse": {"text": "card"}})
    for _ in range(settings.PIPELINE["MAX_ATTEMPTS"]):
        Ticket.objects.filter(pk=ticket.pk).update(updated_at=timezone.now() - timedelta(hours=1))
        assert sweeper.tickets_sweep_stuck(older_than_seconds=60) >= 1

    assert pipeline.stage_run(ticket_id=str(ticket.pk), stage="classify").kind == "dead_lettered"
    assert "never finished" in DeadLetter.objects.get(ticket=ticket).last_error
