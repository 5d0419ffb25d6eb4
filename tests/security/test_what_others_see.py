"""What a tenant and a reviewer are shown: never the operator's internal URLs in a trace's error,
never a customer's card number, e-mail address or phone number in the review queue."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from agents.models import Trace, TraceStatus
from reviews.services import review_create_from_escalation, reviewer_create
from tests.factories import ticket_make
from tickets.models import Status

INTERNAL = "webhook failed: ConnectError: connection refused by http://billing.internal:8080/charge?k=1 (10.0.4.2)"


def test_a_tenant_reads_a_trace_error_without_the_operators_urls_and_operators_keep_it(api):
    http, client = api()
    ticket = ticket_make(client, status=Status.DEAD_LETTERED)
    now = timezone.now()
    Trace.objects.create(
        ticket=ticket,
        stage="execute",
        attempt=1,
        status=TraceStatus.FAILED,
        started_at=now,
        finished_at=now,
        duration_ms=1.0,
        error_class="agents.stages.types.StageError",
        error_message=INTERNAL,
    )

    shown = http.get(f"/api/v1/tickets/{ticket.id}/").json()["trace"][0]["error_message"]

    assert "billing.internal" not in shown and "10.0.4.2" not in shown and "charge" not in shown
    assert shown == "webhook failed: ConnectError: connection refused by [URL] ([ADDRESS])"  # stable, still useful
    assert Trace.objects.get(ticket=ticket).error_message == INTERNAL


CARD = "4111 1111 1111 1111"
BODY = f"My card {CARD} was charged twice, write to jane.doe@example.org or call +44 20 7946 0958"


def _review(client_row):
    ticket = ticket_make(
        client_row,
        body=BODY,
        customer_ref="bob",
        status=Status.AWAITING_REVIEW,
        callback_url="https://hooks.example.com/t/secret-token-123?sig=abc",
        context={"parse": {"text": BODY.lower(), "language": "en"}},
    )
    ticket_make(client_row, body=f"earlier: {CARD}", customer_ref="bob", status=Status.RESOLVED)
    suggestion = {"intent": "card_arrival", "confidence": 0.5, "tier": "local", "plan": [], "reply": "", "detail": ""}
    return review_create_from_escalation(ticket=ticket, reason="low_confidence", suggestion=suggestion)


def test_a_reviewer_sees_a_masked_request_and_a_superuser_sees_it_as_sent(client, api, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    _, tenant = api()
    review = _review(tenant)
    reviewer, _ = reviewer_create(username="rita", password="review-queue-pw-1")
    page = reverse("admin:reviews_review_change", args=[review.pk])

    client.force_login(reviewer)
    as_reviewer = client.get(page).content.decode()
    queue = client.get(reverse("admin:reviews_review_changelist")).content.decode()

    for html in (as_reviewer, queue):
        assert CARD not in html and "jane.doe@example.org" not in html and "7946 0958" not in html
    assert "[CARD_NUMBER]" in as_reviewer and "[EMAIL]" in as_reviewer and "[CARD_NUMBER]" in queue
    assert review.ticket.__class__.objects.get(pk=review.ticket_id).body == BODY  # masked on screen only

    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123456")
    client.force_login(root)
    assert CARD in client.get(page).content.decode()


def test_a_reviewer_reading_the_ticket_sees_it_masked_and_the_callback_url_without_its_token(client, api, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    _, tenant = api()
    review = _review(tenant)
    reviewer, _ = reviewer_create(username="rita", password="review-queue-pw-1")
    page = reverse("admin:tickets_ticket_change", args=[review.ticket_id])

    client.force_login(reviewer)
    html = client.get(page).content.decode()

    assert CARD not in html and "jane.doe@example.org" not in html and "secret-token-123" not in html
    assert "https://hooks.example.com/…" in html and "[CARD_NUMBER]" in html

    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123456")
    client.force_login(root)
    assert "secret-token-123" in client.get(page).content.decode()
