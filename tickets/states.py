"""A ticket's states (no models: importable before Django's apps). Which moves between them are
legal follows from the stage spec: `agents.pipeline.spec.SPEC.check`."""

from __future__ import annotations

from django.db import models


class Status(models.TextChoices):
    RECEIVED = "received"
    PARSING = "parsing"
    CLASSIFYING = "classifying"
    DECIDING = "deciding"
    EXECUTING = "executing"
    ESCALATING = "escalating"
    RESOLVED = "resolved"
    AWAITING_REVIEW = "awaiting_review"
    DEAD_LETTERED = "dead_lettered"


# The terminal states as a list in a fixed order: the partial index `ticket_in_flight` is defined with
# it, and the sweeper's query must spell its condition the same way for Postgres to use the index.
SETTLED_STATUSES = [Status.RESOLVED.value, Status.AWAITING_REVIEW.value, Status.DEAD_LETTERED.value]
TERMINAL = frozenset(SETTLED_STATUSES)
IN_FLIGHT = frozenset(set(Status) - TERMINAL)


class IllegalTransition(Exception):
    """A status change the state machine does not allow (the moves: `agents.pipeline.spec.SPEC`)."""
