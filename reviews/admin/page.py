"""The review page: the ticket, the customer's history, the trace timeline, the suggestion, the decision."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from project.sensitive import mask_sensitive, mask_url
from reviews import services
from reviews.forms import DecisionForm, DismissForm
from reviews.models import Reason, Review, ReviewStatus
from reviews.selectors import customer_history, reply_drafts, trace_timeline
from tickets.models import Status, Ticket

# The submit buttons of the page, in the order they are looked for in the POST.
PAGE_ACTIONS = ("_claim", "_release", "_approve", "_resolve", "_dismiss", "_replay")


class ReviewPageAdmin(admin.ModelAdmin):
    """Replaces the stock change form: reviews are decided through services, never edited as rows."""

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        review = self.get_object(request, unquote(object_id))
        if review is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_or_change_permission(request, review):
            raise PermissionDenied
        if request.method != "POST":
            return self.review_page(request, review)
        if not self.has_change_permission(request, review):
            raise PermissionDenied
        action = next((a for a in PAGE_ACTIONS if a in request.POST), None)
        if action is None:
            return HttpResponseRedirect(request.path)
        return getattr(self, f"page{action}")(request, review)

    def page_claim(self, request: HttpRequest, review: Review) -> HttpResponse:
        return self._attempt(
            request,
            review,
            lambda: services.review_claim(review=review, reviewer=request.user),
            "You hold this review now.",
            request.path,
        )

    def page_release(self, request: HttpRequest, review: Review) -> HttpResponse:
        force = request.user.is_superuser
        return self._attempt(
            request,
            review,
            lambda: services.review_release(review=review, reviewer=request.user, force=force),
            "Released: the review is back in the queue.",
            self._queue_url(request),
        )

    def page_approve(self, request: HttpRequest, review: Review) -> HttpResponse:
        notes = request.POST.get("notes", "")
        return self._attempt(
            request,
            review,
            lambda: services.review_approve(review=review, reviewer=request.user, notes=notes),
            "Approved: the ticket resumes at execute with the agents' suggestion.",
            self._queue_url(request),
        )

    def page_resolve(self, request: HttpRequest, review: Review) -> HttpResponse:
        form = DecisionForm(request.POST)
        if not form.is_valid():
            return self.review_page(request, review, decision_form=form)
        data = form.cleaned_data
        try:
            services.review_resolve(
                review=review, reviewer=request.user, intent=data["intent"], reply=data["reply"], notes=data["notes"]
            )
        except services.ReviewError as exc:
            messages.error(request, str(exc))
            return self.review_page(request, review, decision_form=form)
        self.log_change(request, review, "resolved")
        messages.success(request, f"Resolved as {data['intent']}: the ticket resumes at execute.")
        return HttpResponseRedirect(self._queue_url(request))

    def page_dismiss(self, request: HttpRequest, review: Review) -> HttpResponse:
        form = DismissForm(request.POST)
        if not form.is_valid():
            return self.review_page(request, review, dismiss_form=form)
        reason = form.cleaned_data["reason"]
        return self._attempt(
            request,
            review,
            lambda: services.review_dismiss(review=review, reviewer=request.user, reason=reason),
            "Dismissed: the ticket is closed without a further reply.",
            self._queue_url(request),
        )

    def page_replay(self, request: HttpRequest, review: Review) -> HttpResponse:
        return self._attempt(
            request,
            review,
            lambda: services.review_replay(review=review, reviewer=request.user),
            "Replayed: the ticket runs again from the stage that failed.",
            self._queue_url(request),
        )

    def _attempt(
        self, request: HttpRequest, review: Review, call: Callable[[], object], success: str, then: str
    ) -> HttpResponse:
        try:
            call()
        except services.ReviewError as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(request.path)
        self.log_change(request, review, success.split(":")[0].lower())
        messages.success(request, success)
        return HttpResponseRedirect(then)

    def _queue_url(self, request: HttpRequest) -> str:
        return reverse("admin:reviews_review_changelist", current_app=self.admin_site.name)

    def review_page(
        self,
        request: HttpRequest,
        review: Review,
        *,
        decision_form: DecisionForm | None = None,
        dismiss_form: DismissForm | None = None,
    ) -> TemplateResponse:
        """Render the page; bound forms are passed back so a rejected decision keeps its edits."""
        review.refresh_from_db()
        ticket = review.ticket
        history = list(customer_history(ticket=ticket))
        if not sees_unmasked(request):
            for shown in (ticket, *history):
                masked_for_display(shown)
        can_act = self.has_change_permission(request, review)
        mine = review.status == ReviewStatus.CLAIMED and review.assignee_id == request.user.pk
        context = {
            **self.admin_site.each_context(request),
            "title": f"Review: {ticket.subject or ticket.body[:60]}",
            "subtitle": None,
            "opts": self.opts,
            "original": review,
            "review": review,
            "ticket": ticket,
            "history": history,
            "timeline": _timeline(ticket),
            "parsed": ticket.context.get("parse") or {},
            "dead_letters": list(ticket.dead_letters.all()[:3]),
            "can_act": can_act,
            "mine": mine,
            "can_claim": can_act and review.status == ReviewStatus.OPEN,
            "held_by_other": review.status == ReviewStatus.CLAIMED and not mine,
            "can_replay": can_act
            and review.is_live
            and ticket.status == Status.DEAD_LETTERED
            and (review.status == ReviewStatus.OPEN or mine),
            "is_dead_letter": review.reason == Reason.DEAD_LETTER,
            "decision_form": decision_form or DecisionForm.for_review(review),
            "dismiss_form": dismiss_form or DismissForm(),
            "can_view_tickets": request.user.has_perm("tickets.view_ticket"),
            "queue_url": self._queue_url(request),
            "reply_drafts": reply_drafts(ticket=ticket) if mine else {},
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/reviews/review/review_page.html", context)


def sees_unmasked(request: HttpRequest) -> bool:
    """Superusers see a ticket as sent; reviewers with card numbers, e-mail addresses and phone
    numbers masked (the parse stage's spans), and callback URLs without path or query."""
    return bool(request.user.is_superuser)


def masked_for_display(ticket: Ticket) -> Ticket:
    """The ticket, changed in memory only, as a reviewer reads it: never saved."""
    ticket.subject = mask_sensitive(ticket.subject)
    ticket.body = mask_sensitive(ticket.body)
    ticket.reply = mask_sensitive(ticket.reply)
    if "callback_url" in ticket.__dict__:
        ticket.callback_url = mask_url(ticket.callback_url)
    ticket.save = _never_saved  # type: ignore[method-assign]
    return ticket


def _never_saved(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("a ticket masked for display is never saved")


def _timeline(ticket: Ticket) -> list[dict[str, Any]]:
    rows = []
    for trace in trace_timeline(ticket=ticket):
        offset = (trace.started_at - ticket.created_at).total_seconds()
        rows.append({"trace": trace, "offset": offset})
    return rows
