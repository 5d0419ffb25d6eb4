"""The stage spec is the one place a stage is declared: a toy stage added there alone runs, in order,
fused with its neighbours, with its own trace row; the tasks, routes and queues follow the spec."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from agents.models import Trace
from agents.pipeline import runner
from agents.pipeline.spec import QUEUES, SPEC, STAGES, StageSpec, lane_queues
from agents.stages.types import StageContext, StageResult, TicketInput
from tests.factories import client_with_token, ticket_make
from tickets.models import Status

ROOT = Path(__file__).resolve().parents[2]


def sentiment(ticket: TicketInput, ctx: StageContext) -> StageResult:
    """A toy stage: reads parse's output, writes its own."""
    text = ticket.context["parse"]["text"]
    return StageResult(output={"angry": "!" in text}, confidence=1.0)


def with_sentiment_after_classify() -> tuple[StageSpec, ...]:
    classify = SPEC.by_name["classify"]
    toy = StageSpec("sentiment", sentiment, "sentiment", classify.next_status)
    stages: list[StageSpec] = []
    for spec in STAGES:
        stages.append(dataclasses.replace(spec, next_status=toy.status) if spec is classify else spec)
        if spec is classify:
            stages.append(toy)
    return tuple(stages)


def test_a_toy_stage_declared_in_the_spec_alone_runs_in_order_with_its_trace(intents, stage_spec, monkeypatch):
    monkeypatch.setitem(settings.PIPELINE, "FUSE", None)  # the default: every stage whose spec allows it
    stage_spec.load(with_sentiment_after_classify())
    client, _ = client_with_token()
    ticket = ticket_make(client, body="My card still hasn't arrived!")

    assert runner.stage_run(ticket_id=str(ticket.pk), stage="parse").kind == "committed"

    ticket.refresh_from_db()
    assert ticket.status == Status.RESOLVED
    assert ticket.context["sentiment"] == {"angry": True}
    traces = list(Trace.objects.filter(ticket=ticket).order_by("started_at", "id").values_list("stage", flat=True))
    assert traces == ["parse", "classify", "sentiment", "decide", "execute"]


def test_the_state_machine_follows_the_spec(stage_spec):
    stage_spec.load(with_sentiment_after_classify())
    stage_spec.check(Status.CLASSIFYING, "sentiment")
    stage_spec.check("sentiment", Status.DECIDING)
    stage_spec.check("sentiment", Status.ESCALATING)
    with pytest.raises(Exception, match="illegal"):
        stage_spec.check(Status.CLASSIFYING, Status.DECIDING)  # the toy stage is not skipped


def test_tasks_routes_and_queues_follow_the_spec():
    from agents import tasks  # noqa: F401 - registers the tasks, as a worker's autodiscovery does
    from project.celery import app

    routes: dict[str, Any] = app.conf.task_routes
    queues = {queue.name for queue in app.conf.task_queues}
    for spec in STAGES:
        assert spec.task in app.tasks, spec.name
        assert routes[spec.task] == {"queue": spec.queue_name}
    assert set(QUEUES) <= queues


def test_the_procfiles_cpu_worker_consumes_every_lane_and_every_cheap_stage():
    words = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("cpu:")).split()
    consumed = set(words[words.index("-Q") + 1].split(","))
    cheap = {spec.queue_name for spec in STAGES if spec.name != "execute"}  # execute waits on the network: io
    assert set(lane_queues(QUEUES[0])) | cheap == consumed
    assert "--pool" in words and words[words.index("--pool") + 1] == "prefork"  # time limits fire
