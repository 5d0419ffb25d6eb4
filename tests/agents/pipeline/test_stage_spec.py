"""The stage spec is the one place a stage is declared: a toy stage added there alone runs, in order,
fused with its neighbours, with its own trace row; the tasks, routes and queues follow the spec."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings
from django.core.management import call_command

from agents.models import DeadLetter, Trace
from agents.pipeline import runner
from agents.pipeline.spec import CHEAP, IO, QUEUES, SPEC, STAGES, StageSpec, lane_queues, worker_roles
from agents.pipeline.worker import celery_argv
from agents.stages.types import StageContext, StageResult, TicketInput
from tests.factories import client_with_token, ticket_make
from tickets.models import Status, Ticket

ROOT = Path(__file__).resolve().parents[3]


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
    stage_spec.check("classifying", "sentiment")
    stage_spec.check("sentiment", "deciding")
    stage_spec.check("sentiment", "escalating")
    with pytest.raises(Exception, match="illegal"):
        stage_spec.check("classifying", "deciding")  # the toy stage is not skipped


def test_tasks_routes_and_queues_follow_the_spec():
    from agents import tasks  # noqa: F401 - registers the tasks, as a worker's autodiscovery does
    from project.celery import app

    routes: dict[str, Any] = app.conf.task_routes
    queues = {queue.name for queue in app.conf.task_queues}
    for spec in STAGES:
        assert spec.task in app.tasks, spec.name
        assert routes[spec.task] == {"queue": spec.queue_name}
    assert set(QUEUES) <= queues


def test_a_toy_stage_needs_no_migration_and_its_queue_goes_to_the_worker_roles(stage_spec, db):
    stage_spec.load(with_sentiment_after_classify())

    # No column holds the stages as choices: a new stage's name and status need no migration.
    for model, field in ((Trace, "stage"), (DeadLetter, "stage"), (Ticket, "status")):
        assert not model._meta.get_field(field).choices, (model, field)
    out = io.StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()

    # The worker roles follow the spec, and every deployment file starts its workers from it.
    roles = worker_roles(stage_spec)
    assert "sentiment" in roles[CHEAP] and set(lane_queues(QUEUES[0])) <= set(roles[CHEAP])
    assert roles[IO] == ("execute", "webhooks")  # execute waits on the network
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    chart = (ROOT / "deploy" / "helm" / "agent-pipeline" / "templates" / "workers.yaml").read_text()
    procfile = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if ": " in line)
    for role in roles:
        assert procfile[role].split()[:4] == ["python", "-m", "agents.pipeline.worker", role], role
        assert compose[role]["command"][:4] == ["python", "-m", "agents.pipeline.worker", role], role
    assert "- agents.pipeline.worker\n            - {{ $role }}" in chart
    assert "-Q" not in chart and not any("-Q" in cmd.split() for cmd in procfile.values())
    argv = celery_argv(CHEAP, ["--pool", "prefork"])  # what the entry point execs, now with the toy stage
    assert "sentiment" in argv[argv.index("-Q") + 1].split(",") and argv[-2:] == ["--pool", "prefork"]
