"""The reviewers' workspace through the admin: the queue, the review page, and the actions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from agents.models import DeadLetter, Trace
from reviews import services
from reviews.models import Decision, Feedback, Review, ReviewStatus
from tests.factories import ticket_make
from tickets.models import Priority, Status

pytestmark = pytest.mark.django_db

QUEUE = reverse("admin:reviews_review_changelist")


def page(review: Review) -> str:
    return reverse("admin:reviews_review_change", args=[review.pk])


@pytest.fixture
def browser(client, reviewer):
    client.force_login(reviewer)
    return client


def test_the_queue_lists_live_reviews_by_priority_then_age_with_counts(browser, escalate, reviewer):
    old = escalate(body="An old normal one", customer_ref="old")
    Review.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=5))
    escalate(body="An urgent one", customer_ref="urgent", priority=Priority.URGENT)
    claimed = escalate(body="A claimed one", customer_ref="claimed")
    services.review_claim(review=claimed, reviewer=reviewer)
    done = services.review_claim(review=escalate(body="A finished one", customer_ref="done"), reviewer=reviewer)
    services.review_dismiss(review=done, reviewer=reviewer, reason="spam")

    response = browser.get(QUEUE)

    assert response.status_code == 200
    rows = [r.ticket.customer_ref for r in response.context["cl"].result_list]
    assert rows == ["urgent", "old", "claimed"]
    assert response.context["queue_stats"]["open"] == 2 and response.context["queue_stats"]["mine"] == 1
    assert response.context["oldest_on_page"] == Review.objects.get(pk=old.pk).created_at
    assert b"Claim next review" in response.content and b"5\xc2\xa0hours" in response.content


QUEUE_QUERIES = [
    ("reason=policy", {"policy"}),
    ("intent=refund_not_showing_up", {"policy"}),
    ("age=3d", {"aged"}),
    ("assigned=me", {"mine"}),
    ("assigned=none", {"policy", "aged", "plain"}),
    ("assigned=others", {"theirs"}),
    ("queue=all&q=plain", {"plain"}),
    ("q=acme", {"policy", "aged", "plain", "mine", "theirs"}),
    ("q=tuesdays", {"aged", "plain", "mine", "theirs"}),
    ("_facets=True", {"policy", "aged", "plain", "mine", "theirs"}),
]


def test_the_queue_filters_by_reason_intent_age_assignee_and_searches_text_and_customer(
    browser, escalate, reviewer, make_reviewer
):
    escalate(body="Where is my refund", intent="refund_not_showing_up", reason="policy", customer_ref="policy")
    aged = escalate(customer_ref="aged")
    Review.objects.filter(pk=aged.pk).update(created_at=timezone.now() - timedelta(hours=30))
    escalate(customer_ref="plain")
    services.review_claim(review=escalate(customer_ref="mine"), reviewer=reviewer)
    services.review_claim(review=escalate(customer_ref="theirs"), reviewer=make_reviewer("sam"))

    found = {
        query: {r.ticket.customer_ref for r in browser.get(f"{QUEUE}?{query}").context["cl"].result_list}
        for query, _ in QUEUE_QUERIES
    }

    assert found == dict(QUEUE_QUERIES)


def test_the_review_page_shows_the_ticket_history_timeline_and_suggestion(browser, escalate):
    review = escalate(body="My card is not here & I'm <angry>", customer_ref="bob")
    ticket = review.ticket
    for n in range(10):
        ticket_make(ticket.client, customer_ref="bob", body=f"earlier request {n}", intent="card_arrival")
    now = timezone.now()
    for stage, status, error in [("parse", "ok", ""), ("classify", "retry", "rate limited"), ("classify", "ok", "")]:
        Trace.objects.create(
            ticket=ticket,
            stage=stage,
            attempt=1,
            status=status,
            started_at=now,
            finished_at=now,
            duration_ms=12.5,
            confidence=0.55,
            tier="local",
            model="tfidf-v3",
            error_message=error,
        )

    response = browser.get(page(review))

    html = response.content.decode()
    assert response.status_code == 200
    assert "My card is not here &amp; I&#x27;m &lt;angry&gt;" in html  # as written, escaped
    assert len(response.context["history"]) == 8 and "earlier request 9" in html
    assert [row["trace"].stage for row in response.context["timeline"]] == ["parse", "classify", "classify"]
    assert "tfidf-v3" in html and "rate limited" in html and "13 ms" in html
    assert "Hi bob, your card is on its way." in html and "0.550" in html
    assert 'name="_claim"' in html and 'name="_resolve"' not in html


def test_claiming_on_the_review_page_shows_the_decision_form_and_another_reviewer_sees_it_taken(
    browser, escalate, client, make_reviewer
):
    review = escalate()

    response = browser.post(page(review), {"_claim": "Claim"}, follow=True)

    assert b'name="_resolve"' in response.content and b"You hold this review now." in response.content
    client.force_login(make_reviewer("sam"))
    response = client.get(page(review))
    assert b"Taken: rita is working on this review." in response.content
    response = client.post(page(review), {"_claim": "Claim"}, follow=True)
    assert b"This review is taken: rita claimed it." in response.content
    assert Review.objects.get(pk=review.pk).assignee.username == "rita"


def test_resolving_on_the_review_page_with_a_corrected_intent_resumes_the_ticket(browser, escalate, reviewer):
    review = services.review_claim(review=escalate(), reviewer=reviewer)

    response = browser.post(
        page(review), {"intent": "lost_or_stolen_card", "reply": "We froze it.", "notes": "n", "_resolve": "1"}
    )

    assert response.status_code == 302 and response["Location"] == QUEUE
    review.refresh_from_db()
    assert (review.status, review.decision, review.final_intent) == (
        "resolved",
        Decision.CORRECT,
        "lost_or_stolen_card",
    )
    assert review.ticket.status == "executing" and Feedback.objects.get().overridden


def test_a_rejected_decision_keeps_the_reviewers_edits_and_says_why(browser, escalate, reviewer):
    review = services.review_claim(review=escalate(), reviewer=reviewer)

    response = browser.post(page(review), {"intent": "card_arrival", "reply": "", "_resolve": "1"})

    assert response.status_code == 200
    assert b"Write the reply" in response.content
    assert Review.objects.get(pk=review.pk).status == ReviewStatus.CLAIMED


def test_approve_and_dismiss_and_release_on_the_review_page(browser, escalate, reviewer):
    approved, dismissed, released = (
        services.review_claim(review=escalate(customer_ref=c), reviewer=reviewer) for c in ("a", "d", "r")
    )

    browser.post(page(approved), {"_approve": "1", "notes": ""})
    no_reason = browser.post(page(dismissed), {"_dismiss": "1", "dismiss-reason": ""})
    browser.post(page(dismissed), {"_dismiss": "1", "dismiss-reason": "duplicate"})
    browser.post(page(released), {"_release": "1"})

    assert b"This field is required" in no_reason.content
    statuses = {r.ticket.customer_ref: (r.status, r.decision) for r in Review.objects.all()}
    assert statuses == {"a": ("resolved", "approve"), "d": ("dismissed", "dismiss"), "r": ("open", "")}


def test_bulk_approval_approves_the_suggestions_of_one_intent(browser, escalate):
    cards = [escalate(customer_ref=f"c{n}") for n in range(3)]
    refund = escalate(intent="refund_not_showing_up", reply="Refunds take 5 days.", customer_ref="r")

    mixed = browser.post(
        QUEUE, {"action": "approve_suggestions", "_selected_action": [refund.pk, cards[0].pk]}, follow=True
    )
    response = browser.post(
        QUEUE, {"action": "approve_suggestions", "_selected_action": [c.pk for c in cards]}, follow=True
    )

    assert b"filter by intent first" in mixed.content
    assert b"Approved 3" in response.content
    assert set(Review.objects.values_list("status", flat=True)) == {"resolved", "open"}
    assert Feedback.objects.filter(decision=Decision.APPROVE).count() == 3


def test_claim_and_release_actions_and_the_claim_next_button(browser, escalate, reviewer, make_reviewer):
    first, second = escalate(customer_ref="1"), escalate(customer_ref="2", priority=Priority.HIGH)
    services.review_claim(review=first, reviewer=make_reviewer("sam"))

    claimed = browser.post(QUEUE, {"action": "claim_selected", "_selected_action": [first.pk, second.pk]}, follow=True)
    browser.post(QUEUE, {"action": "release_selected", "_selected_action": [second.pk]})
    nxt = browser.post(reverse("admin:reviews_review_claim_next"))
    empty = browser.post(reverse("admin:reviews_review_claim_next"), follow=True)

    assert b"Claimed 1." in claimed.content and b"1 skipped" in claimed.content
    assert nxt["Location"] == page(second)
    assert Review.objects.get(pk=second.pk).assignee == reviewer
    assert b"The queue is empty" in empty.content


def test_dead_letters_sit_in_the_same_queue_with_a_replay_action(browser, escalate):
    letter = escalate(reason="dead_letter", status=Status.DEAD_LETTERED, customer_ref="dl")
    DeadLetter.objects.create(
        ticket=letter.ticket,
        stage="execute",
        reason="permanent error",
        attempts=1,
        last_error="downstream refused with 400",
    )

    queue = browser.get(f"{QUEUE}?reason=dead_letter")
    review_page = browser.get(page(letter))
    browser.post(QUEUE, {"action": "replay_dead_letters", "_selected_action": [letter.pk]})

    assert [r.pk for r in queue.context["cl"].result_list] == [letter.pk]
    assert b'name="_replay"' in review_page.content and b"downstream refused with 400" in review_page.content
    letter.refresh_from_db()
    assert (letter.status, letter.decision) == ("dismissed", "replay")
    assert letter.ticket.status == "executing"


def test_the_feedback_page_shows_override_rates_per_intent(client, escalate, reviewer, admin_user):
    review = services.review_claim(review=escalate(), reviewer=reviewer)
    services.review_resolve(review=review, reviewer=reviewer, intent="lost_or_stolen_card", reply="Frozen.")
    client.force_login(reviewer)

    response = client.get(reverse("admin:reviews_feedback_changelist"))

    assert response.status_code == 200
    assert response.context["override_rates"] == [
        {"intent": "card_arrival", "decisions": 1, "overrides": 1, "rate": 1.0}
    ]
    assert b"100 %" in response.content
