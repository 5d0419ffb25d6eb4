from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_reviewers_group(sender: AppConfig, **kwargs: Any) -> None:
    from reviews.services import reviewers_group_sync

    reviewers_group_sync()


class ReviewsConfig(AppConfig):
    name = "reviews"

    def ready(self) -> None:
        # After every migrate (and every test-database flush): permissions exist by then.
        post_migrate.connect(_sync_reviewers_group, sender=self, dispatch_uid="reviews.reviewers_group")
        # The agents hand tickets to people through their own port; this app fills it (agents/people.py).
        from agents.people import ReviewQueue, review_queue_register
        from reviews import escalations, selectors

        review_queue_register(
            ReviewQueue(
                review_open=escalations.review_create_from_escalation,
                review_close_for_replay=escalations.review_close_for_replay,
                feedback_training_rows=selectors.feedback_training_rows,
                decision_confidences=selectors.decision_confidences,
            )
        )
