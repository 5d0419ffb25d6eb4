"""Review services: claim, release, resolve, dismiss, replay, and the feedback they leave."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from agents.models import DeadLetter, Trace
from reviews import services
from reviews.models import Decision, Feedback, Review, ReviewStatus
from reviews.selectors import customer_history, feedback_since, override_rates, review_queue
from tests.factories import ticket_make
from tickets.models import Priority, Status

pytestmark = pytest.mark.django_db


def test_claiming_an_open_review_makes_the_reviewer_its_only_holder(escalate, reviewer):
    review = escalate()

    claimed = services.review_claim(review=review, reviewer=reviewer)

    assert claimed.status == ReviewStatus.CLAIMED
    assert claimed.assignee == reviewer and claimed.claimed_at is not None


def test_a_second_reviewer_is_told_the_review_is_taken(escalate, reviewer, make_reviewer):
    review = escalate()
    services.review_claim(review=review, reviewer=reviewer)

    with pytest.raises(services.ReviewTaken, match="taken: rita claimed it"):
        services.review_claim(review=review, reviewer=make_reviewer("sam"))
    assert Review.objects.get(pk=review.pk).assignee == reviewer


def test_claiming_again_by_the_holder_changes_nothing(escalate, reviewer):
    review = escalate()
    first = services.review_claim(review=review, reviewer=reviewer)

    again = services.review_claim(review=review, reviewer=reviewer)

    assert again.claimed_at == first.claimed_at


def test_only_the_holder_releases_a_claim_unless_forced(escalate, reviewer, make_reviewer):
    review = escalate()
    services.review_claim(review=review, reviewer=reviewer)
    other = make_reviewer("sam")

    with pytest.raises(services.ReviewTaken):
        services.review_release(review=review, reviewer=other)
    released = services.review_release(review=review, reviewer=reviewer)
    assert released.status == ReviewStatus.OPEN and released.assignee is None

    services.review_claim(review=review, reviewer=reviewer)
    assert services.review_release(review=review, reviewer=other, force=True).status == ReviewStatus.OPEN


def test_a_review_must_be_claimed_before_it_is_decided(escalate, reviewer):
    review = escalate()

    with pytest.raises(services.ReviewTaken, match="Claim this review first"):
        services.review_approve(review=review, reviewer=reviewer)
    assert Review.objects.get(pk=review.pk).status == ReviewStatus.OPEN


def test_approving_resumes_the_ticket_at_execute_with_the_suggestion_and_keeps_feedback(escalate, reviewer):
    review = services.review_claim(review=escalate(), reviewer=reviewer)
    review.claimed_at -= timedelta(seconds=30)  # claimed half a minute ago
    review.save(update_fields=["claimed_at"])

    resolved = services.review_approve(review=review, reviewer=reviewer, notes="looks right")

    assert resolved.status == ReviewStatus.RESOLVED and resolved.decision == Decision.APPROVE
    ticket = resolved.ticket
    ticket.refresh_from_db()
    assert ticket.status == "executing"
    assert ticket.context["human"] == {"intent": "card_arrival", "reply": "Hi bob, your card is on its way."}
    feedback = Feedback.objects.get(review=resolved)
    assert feedback.text == "why is the sky blue on tuesdays?"
    assert (feedback.agent_intent, feedback.agent_confidence, feedback.agent_tier) == ("card_arrival", 0.55, "local")
    assert (feedback.human_intent, feedback.human_reply) == ("card_arrival", "Hi bob, your card is on its way.")
    assert feedback.reviewer == reviewer and not feedback.overridden
    assert feedback.seconds_taken is not None and 30 <= feedback.seconds_taken < 60
    decided = Trace.objects.get(ticket=ticket, stage="review")
    assert (decided.status, decided.tier) == ("ok", "human")
    assert decided.output == {
        "decision": "approve",
        "intent": "card_arrival",
        "reply": "Hi bob, your card is on its way.",
        "reviewer": "rita",
    }
    assert decided.started_at == resolved.claimed_at and decided.finished_at >= decided.started_at


def test_correcting_the_intent_or_the_reply_is_recorded_as_an_override(escalate, reviewer):
    review = services.review_claim(review=escalate(), reviewer=reviewer)

    resolved = services.review_resolve(
        review=review, reviewer=reviewer, intent="lost_or_stolen_card", reply="  We froze your card.  "
    )

    assert resolved.decision == Decision.CORRECT
    assert (resolved.final_intent, resolved.final_reply) == ("lost_or_stolen_card", "We froze your card.")
    feedback = Feedback.objects.get(review=resolved)
    assert feedback.overridden and feedback.human_intent == "lost_or_stolen_card"
    decided = Trace.objects.get(ticket=resolved.ticket, stage="review").output
    assert (decided["decision"], decided["intent"], decided["reply"]) == (
        "correct",
        "lost_or_stolen_card",
        "We froze your card.",
    )


@pytest.mark.parametrize(
    ("intent", "reply", "message"),
    [
        ("no_such_intent", "Hello", "Choose an active intent"),
        ("card_arrival", "", "Write the reply"),
        ("terminate_account", "Bye", "may not send a reply"),
    ],
)
def test_a_decision_the_intent_cannot_carry_out_is_refused_and_changes_nothing(
    escalate, reviewer, intent, reply, message
):
    review = services.review_claim(review=escalate(), reviewer=reviewer)

    with pytest.raises(services.ReviewInvalid, match=message):
        services.review_resolve(review=review, reviewer=reviewer, intent=intent, reply=reply)

    review.refresh_from_db()
    assert review.status == ReviewStatus.CLAIMED
    assert review.ticket.status == Status.AWAITING_REVIEW and not Feedback.objects.exists()
    assert not Trace.objects.filter(ticket=review.ticket, stage="review").exists()


def test_a_review_is_decided_once_even_when_the_decision_is_submitted_twice(escalate, reviewer):
    review = services.review_claim(review=escalate(), reviewer=reviewer)
    services.review_approve(review=review, reviewer=reviewer)

    with pytest.raises(services.ReviewTaken, match="already resolved"):
        services.review_approve(review=review, reviewer=reviewer)
    assert Feedback.objects.count() == 1


def test_dismissing_closes_the_ticket_as_resolved_without_a_further_reply(escalate, reviewer):
    review = services.review_claim(review=escalate(), reviewer=reviewer)
    reply_before = review.ticket.reply

    dismissed = services.review_dismiss(review=review, reviewer=reviewer, reason="spam")

    assert dismissed.status == ReviewStatus.DISMISSED and dismissed.dismiss_reason == "spam"
    ticket = dismissed.ticket
    ticket.refresh_from_db()
    assert (ticket.status, ticket.action, ticket.reply) == (Status.RESOLVED, "dismissed", reply_before)
    assert ticket.resolved_at is not None and ticket.context["human"]["decision"] == "dismiss"
    feedback = Feedback.objects.get(review=dismissed)
    assert feedback.decision == Decision.DISMISS and not feedback.overridden
    decided = Trace.objects.get(ticket=ticket, stage="review")
    assert decided.output == {"decision": "dismiss", "reason": "spam", "reviewer": "rita"}


def test_dismissing_needs_a_reason(escalate, reviewer):
    review = services.review_claim(review=escalate(), reviewer=reviewer)

    with pytest.raises(services.ReviewInvalid, match="Say why"):
        services.review_dismiss(review=review, reviewer=reviewer, reason="  ")


def test_a_dead_letter_can_be_dismissed_or_replayed(escalate, reviewer):
    dismissed = escalate(reason="dead_letter", status=Status.DEAD_LETTERED)
    services.review_dismiss(
        review=services.review_claim(review=dismissed, reviewer=reviewer),
        reviewer=reviewer,
        reason="customer phoned, done",
    )
    replayed = escalate(reason="dead_letter", status=Status.DEAD_LETTERED, customer_ref="carol")
    DeadLetter.objects.create(ticket=replayed.ticket, stage="execute", reason="permanent error", attempts=1)

    ticket = services.review_replay(review=replayed, reviewer=reviewer)

    assert Review.objects.get(pk=dismissed.pk).ticket.status == Status.RESOLVED
    assert ticket.status == "executing"
    replayed.refresh_from_db()
    assert (replayed.status, replayed.decision, replayed.assignee) == (
        ReviewStatus.DISMISSED,
        Decision.REPLAY,
        reviewer,
    )
    assert Feedback.objects.get(review=replayed).decision == Decision.REPLAY
    with pytest.raises(services.ReviewTaken):
        services.review_replay(review=replayed, reviewer=reviewer)


def test_claim_next_takes_the_most_urgent_then_oldest_open_review(escalate, reviewer):
    old_normal = escalate(customer_ref="a")
    urgent = escalate(customer_ref="b", priority=Priority.URGENT)
    escalate(customer_ref="c", priority=Priority.URGENT)

    assert services.review_claim_next(reviewer=reviewer) == urgent
    assert [r.ticket.customer_ref for r in review_queue()] == ["b", "c", "a"]
    services.review_claim_next(reviewer=reviewer)
    assert services.review_claim_next(reviewer=reviewer) == old_normal
    assert services.review_claim_next(reviewer=reviewer) is None


def test_bulk_approval_is_for_one_intent_and_skips_reviews_others_hold(escalate, reviewer, make_reviewer):
    cards = [escalate(customer_ref=f"c{i}") for i in range(3)]
    services.review_claim(review=cards[0], reviewer=make_reviewer("sam"))
    refund = escalate(intent="refund_not_showing_up", customer_ref="r", reply="Refunds take 5 days.")

    with pytest.raises(services.ReviewInvalid, match="one suggested intent"):
        services.reviews_approve_suggestions(reviews=[*cards, refund], reviewer=reviewer)
    outcome = services.reviews_approve_suggestions(reviews=cards, reviewer=reviewer)

    assert (outcome.done, outcome.taken, outcome.errors) == (2, 1, [])
    assert Review.objects.filter(status=ReviewStatus.RESOLVED).count() == 2


def test_a_suggestion_bulk_approval_cannot_carry_out_goes_back_to_the_queue(escalate, reviewer):
    no_draft = escalate(reply="", customer_ref="nodraft")

    outcome = services.reviews_approve_suggestions(reviews=[no_draft], reviewer=reviewer)

    assert outcome.done == 0 and "Write the reply" in outcome.errors[0]
    no_draft.refresh_from_db()
    assert (no_draft.status, no_draft.assignee) == (ReviewStatus.OPEN, None)


def test_override_rates_count_approvals_and_corrections_per_agents_intent(escalate, reviewer):
    decisions = [
        ("card_arrival", "card_arrival"),
        ("card_arrival", "lost_or_stolen_card"),
        ("card_arrival", "card_arrival"),
        ("refund_not_showing_up", "card_arrival"),
    ]
    for n, (agents, human) in enumerate(decisions):
        review = services.review_claim(review=escalate(intent=agents, customer_ref=f"o{n}"), reviewer=reviewer)
        services.review_resolve(review=review, reviewer=reviewer, intent=human, reply=review.suggested_reply)
    dismissed = services.review_claim(review=escalate(customer_ref="d"), reviewer=reviewer)
    services.review_dismiss(review=dismissed, reviewer=reviewer, reason="spam")

    assert override_rates() == [
        {"intent": "card_arrival", "decisions": 3, "overrides": 1, "rate": pytest.approx(1 / 3)},
        {"intent": "refund_not_showing_up", "decisions": 1, "overrides": 1, "rate": 1.0},
    ]


def test_feedback_since_returns_rows_from_that_time_on_oldest_first(escalate, reviewer):
    for n in range(3):
        review = services.review_claim(review=escalate(customer_ref=f"f{n}"), reviewer=reviewer)
        services.review_approve(review=review, reviewer=reviewer)
    rows = list(feedback_since())
    Feedback.objects.filter(pk=rows[0].pk).update(created_at=timezone.now() - timedelta(days=2))

    assert [f.pk for f in feedback_since()] == [f.pk for f in rows]
    assert [f.pk for f in feedback_since(since=timezone.now() - timedelta(days=1))] == [rows[1].pk, rows[2].pk]


def test_customer_history_is_the_same_customers_other_tickets_at_the_same_client_newest_first(escalate, api):
    review = escalate(customer_ref="bob")
    earlier = [ticket_make(review.ticket.client, customer_ref="bob", body=f"earlier {n}") for n in range(10)]
    ticket_make(review.ticket.client, customer_ref="someone-else")
    _, other_client = api("other")
    ticket_make(other_client, customer_ref="bob")

    history = list(customer_history(ticket=review.ticket))

    assert len(history) == 8
    assert {t.pk for t in history} <= {t.pk for t in earlier}
    assert history[0].created_at >= history[-1].created_at
