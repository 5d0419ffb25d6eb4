"""Review services: open reviews from escalations, claim them, and carry out people's decisions.

Every state change of a review is a conditional UPDATE (healthchecks' claim pattern): a second
reviewer, a second browser tab or a double-submitted form finds 0 rows and is told so; nothing
is resolved twice, so a reply cannot go out twice.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents.models import Intent
from agents.pipeline.human import ticket_dismiss, ticket_replay, ticket_resume
from reviews.escalations import review_create_from_escalation  # noqa: F401 - part of this module's API
from reviews.models import Decision, Feedback, Review, ReviewStatus
from tickets.models import IllegalTransition, Ticket


class ReviewError(Exception):
    """A decision that cannot be carried out; the message is meant for the reviewer."""


class ReviewTaken(ReviewError):
    """Someone else holds the review, or it has already been decided."""


class ReviewInvalid(ReviewError):
    """The decision itself is wrong (unknown intent, a reply the intent may not send, no reason)."""


def _why_not(review_id: int, reviewer: AbstractBaseUser) -> ReviewTaken:
    current = Review.objects.select_related("assignee").get(pk=review_id)
    if current.status == ReviewStatus.CLAIMED and current.assignee_id != reviewer.pk:
        who = current.assignee.get_username() if current.assignee else "someone else"
        return ReviewTaken(f"This review is taken: {who} claimed it.")
    if current.status == ReviewStatus.OPEN:
        return ReviewTaken("Claim this review first.")
    return ReviewTaken(f"This review is already {current.status}.")


def review_claim(*, review: Review, reviewer: AbstractBaseUser) -> Review:
    """Make `reviewer` the only person who can decide the review; ReviewTaken if someone was first."""
    claimed = Review.objects.filter(pk=review.pk, status=ReviewStatus.OPEN).update(
        status=ReviewStatus.CLAIMED, assignee=reviewer, claimed_at=timezone.now()
    )
    current = Review.objects.get(pk=review.pk)
    if claimed != 1 and not (current.status == ReviewStatus.CLAIMED and current.assignee_id == reviewer.pk):
        raise _why_not(review.pk, reviewer)
    return current


def review_claim_next(*, reviewer: AbstractBaseUser) -> Review | None:
    """Claim the most urgent, oldest open review; None when the queue is empty."""
    for _ in range(5):  # others may take the candidates between our read and our update
        candidates = list(Review.objects.filter(status=ReviewStatus.OPEN).values_list("pk", flat=True)[:10])
        if not candidates:
            return None
        for pk in candidates:
            if Review.objects.filter(pk=pk, status=ReviewStatus.OPEN).update(
                status=ReviewStatus.CLAIMED, assignee=reviewer, claimed_at=timezone.now()
            ):
                return Review.objects.get(pk=pk)
    return None


def review_release(*, review: Review, reviewer: AbstractBaseUser, force: bool = False) -> Review:
    """Give a claimed review back to the queue (`force`: whoever holds it, for a supervisor)."""
    held = Review.objects.filter(pk=review.pk, status=ReviewStatus.CLAIMED)
    if not force:
        held = held.filter(assignee=reviewer)
    if held.update(status=ReviewStatus.OPEN, assignee=None, claimed_at=None) != 1:
        raise _why_not(review.pk, reviewer)
    return Review.objects.get(pk=review.pk)


def _close(review: Review, reviewer: AbstractBaseUser, **fields: Any) -> Review:
    """Close a review the reviewer holds; the caller is inside the decision's transaction."""
    closed = Review.objects.filter(pk=review.pk, status=ReviewStatus.CLAIMED, assignee=reviewer).update(
        resolved_at=timezone.now(), **fields
    )
    if closed != 1:
        raise _why_not(review.pk, reviewer)
    return Review.objects.select_related("ticket").get(pk=review.pk)


def _check_decision(intent: str, reply: str) -> None:
    row = Intent.objects.filter(name=intent, is_active=True).first()
    if row is None:
        raise ReviewInvalid(f"Choose an active intent ({intent!r} is not one).")
    if "reply" in row.allowed_actions and not reply:
        raise ReviewInvalid(f"Write the reply: intent {intent} answers the customer.")
    if reply and "reply" not in row.allowed_actions:
        raise ReviewInvalid(f"Intent {intent} may not send a reply: clear the reply, or dismiss the review.")


def review_resolve(*, review: Review, reviewer: AbstractBaseUser, intent: str, reply: str, notes: str = "") -> Review:
    """Resolve with the reviewer's intent and reply: the ticket resumes at execute, feedback is kept."""
    intent, reply = intent.strip(), reply.strip()
    _check_decision(intent, reply)
    unchanged = intent == review.suggested_intent and reply == review.suggested_reply.strip()
    decision = Decision.APPROVE if unchanged else Decision.CORRECT
    with transaction.atomic():
        closed = _close(
            review,
            reviewer,
            status=ReviewStatus.RESOLVED,
            decision=decision,
            final_intent=intent,
            final_reply=reply,
            notes=notes,
        )
        try:
            ticket_resume(
                ticket=closed.ticket,
                intent=intent,
                reply=reply,
                reviewer=reviewer.get_username(),
                decision=decision,
                started_at=closed.claimed_at,
            )
        except IllegalTransition as exc:
            raise ReviewInvalid(f"The ticket is no longer waiting for a person ({exc}).") from exc
        feedback_record(review=closed, reviewer=reviewer)
    return closed


def review_approve(*, review: Review, reviewer: AbstractBaseUser, notes: str = "") -> Review:
    """Resolve with the agents' suggestion as it stands."""
    return review_resolve(
        review=review, reviewer=reviewer, intent=review.suggested_intent, reply=review.suggested_reply, notes=notes
    )


def review_dismiss(*, review: Review, reviewer: AbstractBaseUser, reason: str, notes: str = "") -> Review:
    """Close without acting: the ticket ends resolved with action "dismissed" and no further reply."""
    reason = reason.strip()
    if not reason:
        raise ReviewInvalid("Say why you dismiss this review.")
    with transaction.atomic():
        closed = _close(
            review,
            reviewer,
            status=ReviewStatus.DISMISSED,
            decision=Decision.DISMISS,
            dismiss_reason=reason[:500],
            notes=notes,
        )
        try:
            ticket_dismiss(
                ticket=closed.ticket, reason=reason, reviewer=reviewer.get_username(), started_at=closed.claimed_at
            )
        except IllegalTransition as exc:
            raise ReviewInvalid(f"The ticket is no longer waiting for a person ({exc}).") from exc
        feedback_record(review=closed, reviewer=reviewer)
    return closed


def review_replay(*, review: Review, reviewer: AbstractBaseUser) -> Ticket:
    """Replay a dead-lettered ticket from the stage that failed; the review closes as "replay"."""
    with transaction.atomic():
        mine = Review.objects.filter(pk=review.pk, status=ReviewStatus.CLAIMED, assignee=reviewer)
        if not mine.exists() and not Review.objects.filter(pk=review.pk, status=ReviewStatus.OPEN).update(
            status=ReviewStatus.CLAIMED, assignee=reviewer, claimed_at=timezone.now()
        ):
            raise _why_not(review.pk, reviewer)
        try:
            ticket = ticket_replay(ticket=review.ticket)  # its signal closes the review
        except IllegalTransition as exc:
            raise ReviewInvalid(f"Only a dead-lettered ticket can be replayed ({exc}).") from exc
        closed = Review.objects.select_related("ticket").get(pk=review.pk)
        feedback_record(review=closed, reviewer=reviewer)
    return ticket


def feedback_record(*, review: Review, reviewer: AbstractBaseUser) -> Feedback:
    """Keep one decided review as a training example."""
    ticket = review.ticket
    taken = (
        (review.resolved_at - review.claimed_at).total_seconds() if review.resolved_at and review.claimed_at else None
    )
    return Feedback.objects.create(
        review=review,
        ticket=ticket,
        text=(ticket.context.get("parse") or {}).get("text") or ticket.body,
        reason=review.reason,
        agent_intent=review.suggested_intent,
        agent_confidence=review.suggested_confidence,
        agent_tier=review.suggested_tier,
        agent_reply=review.suggested_reply,
        human_intent=review.final_intent,
        human_reply=review.final_reply,
        decision=review.decision,
        overridden=review.decision == Decision.CORRECT,
        reviewer=reviewer,
        seconds_taken=taken,
    )


@dataclass
class BulkOutcome:
    """What a bulk decision did: how many were decided, and why the others were not."""

    done: int = 0
    taken: int = 0
    errors: list[str] = field(default_factory=list)


def reviews_approve_suggestions(*, reviews: list[Review], reviewer: AbstractBaseUser) -> BulkOutcome:
    """Claim and approve the suggestions of reviews that all suggest one intent."""
    intents = {r.suggested_intent for r in reviews}
    if len(intents) != 1 or not next(iter(intents)):
        raise ReviewInvalid("Bulk approval is for reviews of one suggested intent: filter by intent first.")
    outcome = BulkOutcome()
    for review in reviews:
        try:
            claimed = review_claim(review=review, reviewer=reviewer)
        except ReviewTaken:
            outcome.taken += 1
            continue
        try:
            review_approve(review=claimed, reviewer=reviewer)
            outcome.done += 1
        except ReviewError as exc:
            outcome.errors.append(f"{review.ticket_id}: {exc}")
            if review.status == ReviewStatus.OPEN:  # we claimed it only to approve it: give it back
                review_release(review=claimed, reviewer=reviewer)
    return outcome


REVIEWERS_GROUP = "reviewers"
# Work the queue and read what explains a ticket; never edit clients, intents or settings.
REVIEWER_PERMISSIONS = (
    ("reviews", "view_review"),
    ("reviews", "change_review"),
    ("reviews", "view_feedback"),
    ("tickets", "view_ticket"),
    ("agents", "view_trace"),
    ("agents", "view_deadletter"),
    ("agents", "view_intent"),
)


def reviewers_group_sync() -> Group:
    """Create the `reviewers` group, or put its permissions back to exactly REVIEWER_PERMISSIONS."""
    group, _ = Group.objects.get_or_create(name=REVIEWERS_GROUP)
    wanted = Q(pk__in=[])
    for app_label, codename in REVIEWER_PERMISSIONS:
        wanted |= Q(content_type__app_label=app_label, codename=codename)
    group.permissions.set(Permission.objects.filter(wanted))
    return group


def reviewer_create(*, username: str, email: str = "", password: str | None = None) -> tuple[Any, str | None]:
    """A staff user in the reviewers group; returns the user and the password generated, if any."""
    generated = None if password else secrets.token_urlsafe(12)
    user, _ = get_user_model().objects.get_or_create(username=username, defaults={"email": email})
    user.is_staff = True
    user.set_password(password or generated)
    user.save()
    user.groups.add(reviewers_group_sync())
    return user, generated
