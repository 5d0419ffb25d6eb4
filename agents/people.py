"""What the agents ask of people: open a review for a ticket they are unsure of, close a dead
letter's review when the ticket is replayed, and the decisions to learn from.

The review queue (the `reviews` app) sits a layer above the agents and imports them; the agents never
import it. It hands itself over here when its app loads (`reviews/apps.py`), as a `ReviewQueue`:
a port the agents own, filled by the layer above (docs/architecture.md, "Apps and their direction").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from tickets.models import Ticket


@dataclass(frozen=True)
class ReviewQueue:
    """The review queue's side of the hand-over, one callable each."""

    # Open a review for an escalated ticket, in the caller's transaction (one live review a ticket).
    review_open: Callable[..., Any]  # (*, ticket: Ticket, reason: str, suggestion: dict) -> Review
    # The ticket is replayed from `stage`: its dead-letter review is no one's to decide any more.
    review_close_for_replay: Callable[..., None]  # (*, ticket: Ticket, stage: str)
    # Text and the person's intent for every approve/correct decision: the local model's training data.
    feedback_training_rows: Callable[[], Iterable[dict[str, Any]]]
    # Per approve/correct decision: the agents' intent, confidence and model, and whether it was overridden.
    decision_confidences: Callable[[], Iterable[dict[str, Any]]]


_queue: list[ReviewQueue] = []


def review_queue_register(queue: ReviewQueue) -> None:
    """Called once by the review queue's app when it loads."""
    _queue[:] = [queue]


def review_queue() -> ReviewQueue:
    """The review queue the agents hand tickets to."""
    if not _queue:
        raise ImproperlyConfigured("no review queue: the `reviews` app is not in INSTALLED_APPS")
    return _queue[0]


def review_open(*, ticket: Ticket, reason: str, suggestion: dict[str, Any]) -> Any:
    """Open a review for `ticket` (idempotent: one live review a ticket)."""
    return review_queue().review_open(ticket=ticket, reason=reason, suggestion=suggestion)


def review_close_for_replay(*, ticket: Ticket, stage: str) -> None:
    """Close `ticket`'s dead-letter review: it is replayed from `stage`."""
    review_queue().review_close_for_replay(ticket=ticket, stage=stage)
