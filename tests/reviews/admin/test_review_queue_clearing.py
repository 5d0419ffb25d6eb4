"""Done when: a person clears a queue of 50 escalated tickets from the admin alone."""

from __future__ import annotations

import pytest
from django.urls import reverse

from agents.models import SideEffect
from reviews.models import Feedback, Review
from tests.conftest import wait_for
from tickets.models import Status, Ticket

QUEUE = reverse("admin:reviews_review_changelist")


@pytest.mark.pipeline
def test_a_reviewer_clears_fifty_escalations_from_the_admin_and_every_ticket_ends_resolved(
    pipeline, client, escalate, reviewer
):
    for n in range(30):
        escalate(body=f"Is my card coming? #{n}", customer_ref=f"card{n}")
    for n in range(5):
        escalate(body=f"Where is my refund? #{n}", intent="refund_not_showing_up", reason="policy",
                 reply="Refunds take up to 5 days to appear.", customer_ref=f"refund{n}")  # fmt: skip
    for n in range(10):
        escalate(body=f"Mystery question #{n}", intent="", confidence=None, reply="", customer_ref=f"odd{n}")
    for n in range(5):
        escalate(body=f"WIN A PRIZE spam #{n}", intent="", confidence=None, reply="", customer_ref=f"spam{n}")
    client.force_login(reviewer)
    assert client.get(QUEUE).context["queue_stats"]["open"] == 50

    for intent in ("card_arrival", "refund_not_showing_up"):  # filter by intent, select all, approve
        one = Review.objects.filter(suggested_intent=intent).first()
        response = client.post(f"{QUEUE}?intent={intent}", {"action": "approve_suggestions", "select_across": "1",
                                                             "_selected_action": [one.pk]}, follow=True)  # fmt: skip
        assert b"Approved " in response.content
    while (claimed := client.post(reverse("admin:reviews_review_claim_next")))["Location"] != QUEUE:
        review = Review.objects.select_related("ticket").get(pk=claimed["Location"].split("/")[-3])
        if "spam" in review.ticket.body:
            client.post(claimed["Location"], {"_dismiss": "1", "dismiss-reason": "spam"})
        else:
            decision = {"intent": "card_arrival", "reply": "Your card is on its way.", "_resolve": "1"}
            client.post(claimed["Location"], decision)

    stats = client.get(QUEUE).context["queue_stats"]
    assert (stats["open"], stats["claimed"]) == (0, 0)
    wait_for(lambda: not Ticket.objects.exclude(status=Status.RESOLVED).exists(), what="all 50 tickets resolved")
    assert Ticket.objects.filter(action="dismissed").count() == 5
    assert SideEffect.objects.filter(tool="reply", idempotency_key__contains=":final:").count() == 45
    assert Feedback.objects.count() == 50
    assert Feedback.objects.filter(overridden=True).count() == 10
