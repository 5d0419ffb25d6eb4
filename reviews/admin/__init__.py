"""The reviewers' workspace in the Django admin: the queue, the review page, the feedback."""

from __future__ import annotations

from reviews.admin.feedback import FeedbackAdmin
from reviews.admin.queue import ReviewAdmin

__all__ = ["FeedbackAdmin", "ReviewAdmin"]
