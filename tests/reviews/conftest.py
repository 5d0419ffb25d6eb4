"""Review-queue fixtures: reviewers, and tickets already escalated to a person."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from reviews.models import Review
from reviews.services import review_create_from_escalation, reviewer_create
from tests.factories import client_with_token, ticket_make
from tickets.models import Priority, Status

PASSWORD = "review-queue-pw-1"
_seq = itertools.count(1)


@pytest.fixture(autouse=True)
def fast_passwords(settings: Any) -> None:
    """PBKDF2's million rounds cost ~0.3 s per login or new user; these tests are not about hashing."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def make_reviewer(db: Any) -> Callable[..., Any]:
    """`make_reviewer("rita")`: a staff user in the reviewers group, password PASSWORD."""

    def make(username: str | None = None) -> Any:
        user, _ = reviewer_create(username=username or f"reviewer{next(_seq)}", password=PASSWORD)
        return user

    return make


@pytest.fixture
def reviewer(make_reviewer: Callable[..., Any]) -> Any:
    return make_reviewer("rita")


@pytest.fixture
def api_client(db: Any) -> Any:
    client, _ = client_with_token(name="acme")
    return client


@pytest.fixture
def escalate(intents: None, api_client: Any) -> Callable[..., Review]:
    """`escalate(body=..., intent=..., ...)`: an awaiting_review ticket and its open review."""

    def make(
        body: str = "Why is the sky blue on Tuesdays?",
        *,
        intent: str = "card_arrival",
        confidence: float | None = 0.55,
        reason: str = "low_confidence",
        priority: int = Priority.NORMAL,
        customer_ref: str = "bob",
        status: str = Status.AWAITING_REVIEW,
        reply: str | None = None,
        client: Any = None,
    ) -> Review:
        reply = f"Hi {customer_ref}, your card is on its way." if reply is None else reply
        plan = [{"tool": "reply", "args": {"text": reply}}] if reply else []
        ticket = ticket_make(
            client or api_client,
            body=body,
            customer_ref=customer_ref,
            priority=priority,
            status=status,
            reply="We have your request; a person will look at it shortly.",
            action="escalated",
            context={
                "parse": {"text": body.lower(), "language": "en"},
                "classify": {"intent": intent, "confidence": confidence, "tier": "local"},
                "decide": {"intent": intent, "plan": plan, "reply": reply},
            },
        )
        suggestion = {
            "intent": intent,
            "confidence": confidence,
            "tier": "local",
            "plan": plan,
            "reply": reply,
            "detail": "confidence below threshold",
        }
        return review_create_from_escalation(ticket=ticket, reason=reason, suggestion=suggestion)

    return make
