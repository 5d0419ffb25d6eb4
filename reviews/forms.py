"""Forms of the review page: the reviewer's decision, and a dismissal with its reason."""

from __future__ import annotations

from typing import Any

from django import forms

from reviews.models import Review
from reviews.selectors import intent_choices


class DecisionForm(forms.Form):
    """The intent and reply the ticket resumes with (pre-filled with the agents' suggestion)."""

    intent = forms.ChoiceField(help_text="What the customer actually wants.")
    reply = forms.CharField(
        required=False,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 80}),
        help_text="Sent to the customer once, through the intent's allowed tools.",
    )
    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 80}))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["intent"].choices = [("", "— choose an intent —")] + [(n, n) for n in intent_choices()]

    @classmethod
    def for_review(cls, review: Review) -> DecisionForm:
        """An unbound form holding the agents' suggestion."""
        return cls(initial={"intent": review.suggested_intent, "reply": review.suggested_reply, "notes": review.notes})


class DismissForm(forms.Form):
    """Close the review without acting; the reason is required and kept."""

    reason = forms.CharField(
        max_length=500,
        widget=forms.TextInput(attrs={"size": 60}),
        help_text="e.g. spam, duplicate of another ticket, handled by phone.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("prefix", "dismiss")
        super().__init__(*args, **kwargs)
