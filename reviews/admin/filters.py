"""Queue filters: status (live by default), intent, age, and who holds the review."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from reviews.models import LIVE, Review, ReviewStatus
from reviews.selectors import review_intents


class QueueFilter(admin.SimpleListFilter):
    """Open and claimed reviews unless the reviewer asks for others: the queue is the default."""

    title = "status"
    parameter_name = "queue"
    default = "todo"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("todo", "to do (open + claimed)"), *((s.value, s.label) for s in ReviewStatus), ("all", "all")]

    def choices(self, changelist: Any) -> Iterator[dict[str, Any]]:
        current = self.value() or self.default
        for value, label in self.lookup_choices:
            yield {
                "selected": current == value,
                "display": label,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet[Review]) -> QuerySet[Review]:
        value = self.value() or self.default
        if value == "todo":
            return queryset.filter(status__in=LIVE)
        return queryset if value == "all" else queryset.filter(status=value)


class IntentFilter(admin.SimpleListFilter):
    """The agents' suggested intent."""

    title = "suggested intent"
    parameter_name = "intent"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in review_intents()] + [("-", "(none)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Review]) -> QuerySet[Review]:
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(suggested_intent="" if value == "-" else value)


AGES = {"1h": (None, 1), "1d": (1, 24), "3d": (24, 72), "old": (72, None)}


class AgeFilter(admin.SimpleListFilter):
    """How long the review has waited."""

    title = "age"
    parameter_name = "age"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("1h", "under an hour"), ("1d", "1 hour to 1 day"), ("3d", "1 to 3 days"), ("old", "over 3 days")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Review]) -> QuerySet[Review]:
        if self.value() not in AGES:
            return queryset
        now = timezone.now()
        younger_than, older_than = AGES[self.value()][1], AGES[self.value()][0]
        if younger_than is not None:
            queryset = queryset.filter(created_at__gt=now - timedelta(hours=younger_than))
        if older_than is not None:
            queryset = queryset.filter(created_at__lte=now - timedelta(hours=older_than))
        return queryset


class AssignmentFilter(admin.SimpleListFilter):
    """Mine, nobody's, or someone else's."""

    title = "assignee"
    parameter_name = "assigned"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("me", "assigned to me"), ("none", "unassigned"), ("others", "assigned to others")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Review]) -> QuerySet[Review]:
        if self.value() == "me":
            return queryset.filter(assignee=request.user)
        if self.value() == "none":
            return queryset.filter(assignee__isnull=True)
        if self.value() == "others":
            return queryset.filter(assignee__isnull=False).exclude(assignee=request.user)
        return queryset
