"""A database made at commit 58fa74c (before the redesign's second step) migrates forward to the head
with every row kept, and the pipeline runs on its rows: a received ticket to resolved, a ticket
awaiting a person resumed by a reviewer, a dead letter replayed, an API key still let in, and the
callbacks' ledger rows (agents' side effects then, tickets' callback deliveries now) all kept, a
callback due before the upgrade delivered after it under its old delivery key, one delivered before
not sent again.

The database is built by migrating the test database back to 58fa74c's last migrations: the files
of those migrations are checked to be 58fa74c's, byte for byte, so the schema is the one it made."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from agents.stages.parse import parse
from agents.stages.types import StageContext, TicketInput
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
BODY = "My card still hasn't arrived"
# The last migration of each of the product's apps at 58fa74c.
AT_58FA74C = [
    ("tickets", "0003_api_keys_and_webhook_secrets"),
    ("agents", "0003_review_decision_stage"),
    ("reviews", "0002_feedback_and_decisions"),
]
# sha256 (first 16 hex digits) of each of those apps' migration files at 58fa74c (`git show 58fa74c:<path>`).
FILES_AT_58FA74C = {
    "agents/migrations/0001_initial.py": "4604998827e85138",
    "agents/migrations/0002_model_versions.py": "dce42b54f6d1d152",
    "agents/migrations/0003_review_decision_stage.py": "7e72d4f0102a33ed",
    "reviews/migrations/0001_initial.py": "9f98b36ecc9a5e16",
    "reviews/migrations/0002_feedback_and_decisions.py": "26e6402119e49059",
    "tickets/migrations/0001_initial.py": "3ba34274a430b8cc",
    "tickets/migrations/0002_callback_due.py": "0747889eee0f7b9d",
    "tickets/migrations/0003_api_keys_and_webhook_secrets.py": "45c9293c6c18055c",
}
TABLES = [
    "tickets_client",
    "tickets_apikey",
    "tickets_ticket",
    "agents_trace",
    "agents_deadletter",
    "agents_sideeffect",  # the callbacks' rows leave it for tickets_callbackdelivery (checked apart)
    "reviews_review",
    "reviews_feedback",
]


def test_the_migrations_of_58fa74c_are_its_own_byte_for_byte():
    found = {path: hashlib.sha256((ROOT / path).read_bytes()).hexdigest()[:16] for path in FILES_AT_58FA74C}
    assert found == FILES_AT_58FA74C


def rows(table: str) -> list[dict[str, Any]]:
    """Every row of `table`, column by column, as the database holds it."""
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT * FROM "{table}" ORDER BY 1')  # noqa: S608 - our own table names
        columns = [c.name for c in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def as_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def callback_key_at_58fa74c(ticket: Any) -> str:
    """agents/callbacks.py's `callback_key` at 58fa74c."""
    return f"{ticket.id}:callback:{ticket.status}:{int(ticket.updated_at.timestamp() * 1_000_000)}"


def fill_at_58fa74c(apps: Any, *, callback_url: str) -> dict[str, Any]:
    """What a database of 58fa74c holds, written with its own models: clients and API keys, tickets in
    every kind of state, their traces, a dead letter, side effects (a reply, callbacks delivered and
    failed), reviews and feedback."""
    now = timezone.now()
    Client, ApiKey, Ticket = (apps.get_model("tickets", m) for m in ("Client", "ApiKey", "Ticket"))
    Trace, DeadLetter, SideEffect = (apps.get_model("agents", m) for m in ("Trace", "DeadLetter", "SideEffect"))
    Review, Feedback = (apps.get_model("reviews", m) for m in ("Review", "Feedback"))

    client = Client.objects.create(name="from-58fa74c", callback_url=callback_url, webhook_secret="whsec_" + "A" * 43)
    token = "sk_" + secrets.token_urlsafe(32)
    ApiKey.objects.create(
        client=client, name="default", prefix=token[:11], key_hash=hashlib.sha256(token.encode()).hexdigest()
    )

    def ticket(**fields: Any) -> Any:
        return Ticket.objects.create(client=client, body=BODY, customer_ref="c1", **fields)

    received = ticket()
    resolved = ticket(
        status="resolved", intent="card_arrival", confidence=0.97, action="reply", reply="on its way",
        resolved_at=now, callback_due_at=now, context={"parse": {"text": "My card still hasn't arrived"}},
    )  # fmt: skip
    # Its classify handed over to Claude before a person was asked: the cheap output under `classify_cpu`.
    waiting = ticket(
        status="awaiting_review", intent="card_arrival", confidence=0.4, action="escalated",
        context={"parse": {"text": BODY}, "classify_cpu": {"intent": "card_arrival", "confidence": 0.4}},
    )  # fmt: skip
    # What parse had stored before classify failed for good.
    parsed = parse(TicketInput("x", client.pk, "c1", "api", "", BODY, 2), StageContext()).output
    dead = ticket(status="dead_lettered", stage_attempts=3, context={"parse": parsed})
    for stage in ("parse", "classify", "decide", "execute"):
        Trace.objects.create(
            ticket=resolved, stage=stage, attempt=1, status="ok", started_at=now, finished_at=now, duration_ms=1.5,
            output={"stage": stage},
        )  # fmt: skip
    Trace.objects.create(
        ticket=dead, stage="classify", attempt=3, status="failed", started_at=now, finished_at=now, duration_ms=2.0,
        error_class="ModelError", error_message="the provider refused",
    )  # fmt: skip
    Trace.objects.create(
        ticket=waiting, stage="review", attempt=1, status="ok", started_at=now, finished_at=now, duration_ms=0
    )
    DeadLetter.objects.create(ticket=dead, stage="classify", reason="out of attempts", attempts=3, last_error="refused")
    SideEffect.objects.create(
        ticket=resolved, idempotency_key=f"{resolved.pk}:execute:reply", tool="reply", arguments={"text": "on its way"},
        status="done", attempts=1, result={"sent": True}, finished_at=now,
    )  # fmt: skip
    # The resolved ticket's callback failed once and is due again; an older ticket's was delivered.
    SideEffect.objects.create(
        ticket=resolved, idempotency_key=callback_key_at_58fa74c(resolved), tool="callback",
        arguments={"url": callback_url}, status="failed", attempts=1, last_error="callback answered 503",
    )  # fmt: skip
    told = ticket(status="resolved", intent="card_arrival", action="reply", reply="done", resolved_at=now)
    SideEffect.objects.create(
        ticket=told, idempotency_key=callback_key_at_58fa74c(told), tool="callback", arguments={"url": callback_url},
        status="done", attempts=1, finished_at=now,
    )  # fmt: skip
    review = Review.objects.create(
        ticket=waiting, reason="low_confidence", suggested_intent="card_arrival", suggested_reply="It is on its way.",
        suggested_plan=[{"tool": "reply"}], suggested_confidence=0.4, suggested_tier="local:1",
    )  # fmt: skip
    Review.objects.create(ticket=dead, reason="dead_letter", detail="classify failed")
    old_review = Review.objects.create(
        ticket=resolved, reason="low_confidence", status="resolved", decision="approve", resolved_at=now - timedelta(days=1)
    )  # fmt: skip
    Feedback.objects.create(
        review=old_review, ticket=resolved, text="My card still hasn't arrived", reason="low_confidence",
        agent_intent="card_arrival", human_intent="card_arrival", decision="approve",
    )  # fmt: skip
    return {
        "token": token, "received": received.pk, "waiting": waiting.pk, "dead": dead.pk, "review": review.pk,
        "owed": callback_key_at_58fa74c(resolved), "told": callback_key_at_58fa74c(told),
    }  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_a_database_of_58fa74c_migrates_to_the_head_keeping_every_row_and_the_pipeline_runs_on_it(intents, recorder):
    from agents.pipeline import runner
    from agents.pipeline.human import ticket_replay
    from reviews.models import Review
    from reviews.services import review_approve, review_claim, reviewer_create
    from tickets.auth import client_by_key
    from tickets.models import Ticket

    executor = MigrationExecutor(connection)
    executor.migrate(AT_58FA74C)
    made = fill_at_58fa74c(executor.loader.project_state(AT_58FA74C).apps, callback_url=recorder.url)
    before = {table: rows(table) for table in TABLES}

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    after = {table: rows(table) for table in TABLES}
    assert all(before.values())
    moved = {"tickets_ticket", "agents_sideeffect"}
    assert {t: r for t, r in after.items() if t not in moved} == {t: r for t, r in before.items() if t not in moved}

    # The callbacks' ledger rows: in tickets now, each with its id, key, URL, status, attempts and times.
    effects = before["agents_sideeffect"]
    assert after["agents_sideeffect"] == [row for row in effects if row["tool"] != "callback"]
    ledger_columns = (
        "id",
        "ticket_id",
        "idempotency_key",
        "status",
        "attempts",
        "last_error",
        "created_at",
        "finished_at",
    )
    callbacks = [row for row in effects if row["tool"] == "callback"]
    assert len(callbacks) == 2
    assert rows("tickets_callbackdelivery") == [
        {**{c: row[c] for c in ledger_columns}, "url": as_json(row["arguments"])["url"]} for row in callbacks
    ]

    def without_context(table_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k != "context"} for row in table_rows]

    assert without_context(after["tickets_ticket"]) == without_context(before["tickets_ticket"])
    contexts = {row["id"]: as_json(row["context"]) for row in after["tickets_ticket"]}
    assert contexts.pop(made["waiting"]) == {
        "parse": {"text": BODY},
        "classify_cheap": {"intent": "card_arrival", "confidence": 0.4},
    }  # its one key renamed (agents/migrations/0005)
    assert contexts == {
        row["id"]: as_json(row["context"]) for row in before["tickets_ticket"] if row["id"] != made["waiting"]
    }

    found = client_by_key(made["token"])
    assert found is not None and found[0].name == "from-58fa74c"

    assert runner.stage_run(ticket_id=str(made["received"]), stage="parse").kind == "committed"
    assert Ticket.objects.get(pk=made["received"]).status == "resolved"

    reviewer, _ = reviewer_create(username="upgraded-reviewer")
    review = review_claim(review=Review.objects.get(pk=made["review"]), reviewer=reviewer)
    review_approve(review=review, reviewer=reviewer)
    assert Ticket.objects.get(pk=made["waiting"]).status == "executing"
    runner.stage_run(ticket_id=str(made["waiting"]), stage="execute")
    assert Ticket.objects.get(pk=made["waiting"]).status == "resolved"

    replayed = ticket_replay(ticket=Ticket.objects.get(pk=made["dead"]))
    assert replayed.status == "classifying"
    runner.stage_run(ticket_id=str(made["dead"]), stage="classify")
    assert Ticket.objects.get(pk=made["dead"]).status == "resolved"
    assert Review.objects.get(ticket_id=made["dead"]).status == "dismissed"  # its dead-letter review closed

    # The callback due before the upgrade goes out under its old key; the one delivered is not sent again.
    from tickets.models import CallbackDelivery
    from tickets.webhooks.delivery import callbacks_drain

    callbacks_drain()  # here, or in a worker that a settled ticket's commit above started

    def keys() -> Counter[str]:
        return Counter(r["headers"]["Idempotency-Key"] for r in list(recorder.requests))

    wait_for(lambda: made["owed"] in keys(), what="the callback owed since before the upgrade")
    assert keys()[made["owed"]] == 1 and made["told"] not in keys()
    row = CallbackDelivery.objects.get(idempotency_key=made["owed"])
    assert (row.status, row.attempts) == ("done", 2)
