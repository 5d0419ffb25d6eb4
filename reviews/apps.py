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
