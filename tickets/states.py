"""A ticket's own states: received, and the three it settles in (no models: importable before Django's
apps). While a stage is due or running the ticket's status is that stage's, declared with the stage in
`agents/pipeline/spec.py`; which moves are legal follows from the spec too (`SPEC.check`)."""

from __future__ import annotations

from django.db import models


class Status(models.TextChoices):
    RECEIVED = "received"
    RESOLVED = "resolved"
    AWAITING_REVIEW = "awaiting_review"
    DEAD_LETTERED = "dead_lettered"


# The terminal states as a list in a fixed order: the partial index `ticket_in_flight` is defined with
# it, and the sweeper's query must spell its condition the same way for Postgres to use the index.
SETTLED_STATUSES = [Status.RESOLVED.value, Status.AWAITING_REVIEW.value, Status.DEAD_LETTERED.value]
TERMINAL = frozenset(SETTLED_STATUSES)


class IllegalTransition(Exception):
    """A status change the state machine does not allow (the moves: `agents.pipeline.spec.SPEC`)."""
