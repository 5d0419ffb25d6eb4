"""Decisions against the real pipeline: a real worker, Redis and Postgres, and real races."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from agents.models import Intent, SideEffect
from agents.pipeline import dispatch, runner
from reviews import services
from reviews.models import Decision, Feedback, Review, ReviewStatus
from tests.conftest import wait_for
from tests.factories import ticket_payload
from tickets.models import Status, Ticket


def race(count: int, call: Callable[[int], Any]) -> list[tuple[str, Any]]:
    """Run `call(i)` in `count` threads released at once, each on its own database connection."""
    barrier, results = threading.Barrier(count), [("none", None)] * count

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = ("ok", call(i))
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test inspects
            results[i] = ("error", exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def settled(ticket_id: Any, statuses: set[str]) -> Ticket:
    return wait_for(
        lambda: (t := Ticket.objects.get(pk=ticket_id)).status in statuses and t,
        what=f"ticket {ticket_id} to reach {sorted(statuses)}",
    )


@pytest.mark.django_db(transaction=True)
def test_reviewers_claiming_the_same_reviews_at_once_get_one_holder_each(escalate, make_reviewer):
    reviews = [escalate(customer_ref=f"race{n}") for n in range(5)]
    people = [make_reviewer(f"racer{n}") for n in range(4)]

    for review in reviews:
        results = race(4, lambda i, review=review: services.review_claim(review=review, reviewer=people[i]))
        winners = [value for kind, value in results if kind == "ok"]
        losers = [value for kind, value in results if kind == "error"]
        assert len(winners) == 1, results
        assert len(losers) == 3 and all(isinstance(e, services.ReviewTaken) for e in losers)
        assert Review.objects.get(pk=review.pk).assignee == winners[0].assignee


@pytest.mark.pipeline
def test_resolving_a_real_escalation_sends_the_reviewers_reply_exactly_once(pipeline, api, make_reviewer):
    http, _ = api()
    response = http.post("/api/v1/tickets/", ticket_payload(body="Why is the sky blue on Tuesdays?"), format="json")
    ticket_id = response.json()["id"]
    settled(ticket_id, {Status.AWAITING_REVIEW})
    reviewer = make_reviewer("rita")
    review = services.review_claim(review=Review.objects.get(ticket_id=ticket_id), reviewer=reviewer)

    services.review_resolve(review=review, reviewer=reviewer, intent="card_arrival", reply="Your card ships today.")
    ticket = settled(ticket_id, {Status.RESOLVED})

    assert (ticket.intent, ticket.action, ticket.reply) == ("card_arrival", "reply", "Your card ships today.")
    assert ticket.context["execute"]["source"] == "human"
    dispatch.stage_enqueue(ticket_id, "execute")  # a redelivery finds the ticket resolved
    assert runner.stage_run(ticket_id=ticket_id, stage="execute").kind == "skipped"
    final = SideEffect.objects.filter(ticket_id=ticket_id, tool="reply", idempotency_key__contains=":final:")
    assert [(s.idempotency_key, s.attempts) for s in final] == [(f"{ticket_id}:final:0:reply", 1)]
    feedback = Feedback.objects.get(review=review)
    assert (feedback.agent_intent, feedback.human_intent, feedback.decision) == ("", "card_arrival", Decision.CORRECT)


@pytest.mark.pipeline
def test_two_browsers_submitting_one_decision_at_once_resolve_it_once(pipeline, escalate, reviewer):
    review = services.review_claim(review=escalate(), reviewer=reviewer)
    replies = ["Reply from tab one.", "Reply from tab two."]

    results = race(
        2, lambda i: services.review_resolve(review=review, reviewer=reviewer, intent="card_arrival", reply=replies[i])
    )

    assert sorted(kind for kind, _ in results) == ["error", "ok"]
    assert isinstance(next(v for k, v in results if k == "error"), services.ReviewTaken)
    winner = next(v for k, v in results if k == "ok")
    ticket = settled(review.ticket_id, {Status.RESOLVED})
    assert ticket.reply == winner.final_reply
    assert SideEffect.objects.filter(ticket=ticket, tool="reply", idempotency_key__contains=":final:").count() == 1
    assert Feedback.objects.count() == 1


@pytest.mark.pipeline
def test_replaying_a_dead_letter_from_the_queue_resolves_the_ticket(pipeline, api, recorder, settings, reviewer):
    settings.PIPELINE = {**settings.PIPELINE, "MAX_ATTEMPTS": 2}
    Intent.objects.filter(name="lost_or_stolen_card").update(webhook_url=recorder.url)
    recorder.statuses = [500, 500]
    http, _ = api()
    ticket_id = http.post("/api/v1/tickets/", ticket_payload(body="Someone has stolen my card"), format="json").json()[
        "id"
    ]
    settled(ticket_id, {Status.DEAD_LETTERED})
    review = Review.objects.get(ticket_id=ticket_id)
    assert review.reason == "dead_letter" and review.suggested_intent == "lost_or_stolen_card"

    services.review_replay(review=review, reviewer=reviewer)
    ticket = settled(ticket_id, {Status.RESOLVED})

    assert ticket.action == "reply+webhook"
    review.refresh_from_db()
    assert (review.status, review.decision) == (ReviewStatus.DISMISSED, Decision.REPLAY)
    assert SideEffect.objects.get(ticket_id=ticket_id, idempotency_key__contains=":final:0:reply").attempts == 1
