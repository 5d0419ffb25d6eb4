"""The queue: open reviews by ticket priority then age, with filters, counts and bulk actions."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import Truncator
from django.utils.timesince import timesince

from project.sensitive import mask_sensitive
from reviews import services
from reviews.admin.filters import AgeFilter, AssignmentFilter, IntentFilter, QueueFilter
from reviews.admin.page import ReviewPageAdmin
from reviews.models import LIVE, Reason, Review, ReviewStatus
from reviews.selectors import review_queue_stats


@admin.register(Review)
class ReviewAdmin(ReviewPageAdmin):
    list_display = [
        "request_text",
        "priority",
        "customer",
        "why",
        "suggested_intent",
        "confidence",
        "held_by",
        "age",
    ]
    list_display_links = ["request_text"]
    list_filter = [QueueFilter, "reason", IntentFilter, AgeFilter, AssignmentFilter]
    search_fields = ["ticket__body", "ticket__subject", "ticket__customer_ref", "ticket__client__name"]
    list_per_page = 50
    actions = ["claim_selected", "release_selected", "approve_suggestions", "replay_dead_letters"]
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Review]:
        return super().get_queryset(request).select_related("ticket", "ticket__client", "assignee")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # reviews come from escalations only

    def has_delete_permission(self, request: HttpRequest, obj: Review | None = None) -> bool:
        return request.user.is_superuser

    @admin.display(description="request", ordering="ticket__body")
    def request_text(self, review: Review) -> str:
        ticket = review.ticket
        text = f"{ticket.subject} — {ticket.body}" if ticket.subject else ticket.body
        text = Truncator(mask_sensitive(text)).chars(110)  # a preview: masked for everyone
        return format_html('<span class="rv-request">{}</span>', text)

    @admin.display(description="priority", ordering="-ticket__priority")
    def priority(self, review: Review) -> str:
        return review.ticket.get_priority_display()

    @admin.display(description="customer", ordering="ticket__customer_ref")
    def customer(self, review: Review) -> str:
        return f"{review.ticket.customer_ref or '—'} @ {review.ticket.client.name}"

    @admin.display(description="reason", ordering="reason")
    def why(self, review: Review) -> str:
        return review.reason.replace("_", " ")

    @admin.display(description="confidence", ordering="suggested_confidence")
    def confidence(self, review: Review) -> str:
        return "—" if review.suggested_confidence is None else f"{review.suggested_confidence:.2f}"

    @admin.display(description="status", ordering="status")
    def held_by(self, review: Review) -> str:
        if review.status == ReviewStatus.CLAIMED and review.assignee is not None:
            return f"claimed by {review.assignee.get_username()}"
        return review.status

    @admin.display(description="waiting", ordering="created_at")
    def age(self, review: Review) -> str:
        return timesince(review.created_at, review.resolved_at or timezone.now())

    def get_urls(self) -> list[URLPattern]:
        claim_next = path(
            "claim-next/", self.admin_site.admin_view(self.claim_next_view), name="reviews_review_claim_next"
        )
        return [claim_next, *super().get_urls()]

    def claim_next_view(self, request: HttpRequest) -> HttpResponse:
        """POST: claim the most urgent open review and open its page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request):
            messages.error(request, "You may not work the review queue.")
            return HttpResponseRedirect(self._queue_url(request))
        review = services.review_claim_next(reviewer=request.user)
        if review is None:
            messages.info(request, "The queue is empty: nothing left to claim.")
            return HttpResponseRedirect(self._queue_url(request))
        messages.success(request, "You hold this review now.")
        return HttpResponseRedirect(reverse("admin:reviews_review_change", args=[review.pk]))

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        context = {
            "title": "Review queue",
            "queue_stats": review_queue_stats(user=request.user),
            "now": timezone.now(),
            "can_work": self.has_change_permission(request),
            **(extra_context or {}),
        }
        response = super().changelist_view(request, context)
        cl = getattr(response, "context_data", {}).get("cl")
        if cl is not None:
            waiting = [r.created_at for r in cl.result_list if r.status in LIVE]
            response.context_data["oldest_on_page"] = min(waiting) if waiting else None
        return response

    @admin.action(description="Claim selected reviews", permissions=["change"])
    def claim_selected(self, request: HttpRequest, queryset: QuerySet[Review]) -> None:
        done = taken = 0
        for review in queryset:
            try:
                services.review_claim(review=review, reviewer=request.user)
                done += 1
            except services.ReviewTaken:
                taken += 1
        self._report(request, f"Claimed {done}.", taken, "taken by someone else or already decided")

    @admin.action(description="Release selected claims", permissions=["change"])
    def release_selected(self, request: HttpRequest, queryset: QuerySet[Review]) -> None:
        done = refused = 0
        for review in queryset:
            try:
                services.review_release(review=review, reviewer=request.user, force=request.user.is_superuser)
                done += 1
            except services.ReviewTaken:
                refused += 1
        self._report(request, f"Released {done}.", refused, "not held by you")

    @admin.action(description="Approve the suggestions (reviews of one intent)", permissions=["change"])
    def approve_suggestions(self, request: HttpRequest, queryset: QuerySet[Review]) -> None:
        try:
            outcome = services.reviews_approve_suggestions(reviews=list(queryset), reviewer=request.user)
        except services.ReviewInvalid as exc:
            messages.error(request, str(exc))
            return
        self._report(
            request,
            f"Approved {outcome.done}: their tickets resume at execute.",
            outcome.taken,
            "taken by someone else or already decided",
        )
        for error in outcome.errors[:10]:
            messages.error(request, error)

    @admin.action(description="Replay selected dead letters", permissions=["change"])
    def replay_dead_letters(self, request: HttpRequest, queryset: QuerySet[Review]) -> None:
        done, refused = 0, []
        for review in queryset.filter(reason=Reason.DEAD_LETTER):
            try:
                services.review_replay(review=review, reviewer=request.user)
                done += 1
            except services.ReviewError as exc:
                refused.append(str(exc))
        self._report(request, f"Replayed {done}.", len(refused), "could not be replayed")

    def _report(self, request: HttpRequest, message: str, skipped: int, why: str) -> None:
        messages.success(request, message)
        if skipped:
            messages.warning(request, f"{skipped} skipped: {why}.")
