"""The reviewers group: work the queue, read what explains a ticket, edit nothing else."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.http import HttpRequest
from django.urls import reverse

from agents.models import Intent
from reviews.models import Review, ReviewStatus
from reviews.services import REVIEWERS_GROUP

pytestmark = pytest.mark.django_db


def test_migrate_creates_the_reviewers_group_with_only_queue_and_read_permissions():
    group = Group.objects.get(name=REVIEWERS_GROUP)

    perms = set(group.permissions.values_list("content_type__app_label", "codename"))

    assert perms == {
        ("reviews", "view_review"), ("reviews", "change_review"), ("reviews", "view_feedback"),
        ("tickets", "view_ticket"), ("agents", "view_trace"), ("agents", "view_deadletter"),
        ("agents", "view_intent"),
    }  # fmt: skip


def test_a_reviewer_can_open_the_queue_and_claim_a_review(client, reviewer, escalate):
    review = escalate()
    client.force_login(reviewer)

    assert client.get(reverse("admin:reviews_review_changelist")).status_code == 200
    client.post(reverse("admin:reviews_review_change", args=[review.pk]), {"_claim": "1"})

    assert Review.objects.get(pk=review.pk).status == ReviewStatus.CLAIMED


@pytest.mark.parametrize(
    "url",
    ["admin:tickets_client_changelist", "admin:tickets_client_add", "admin:auth_user_changelist",
     "admin:auth_group_changelist", "admin:agents_intent_add", "admin:reviews_review_add"],
)  # fmt: skip
def test_a_reviewer_cannot_reach_clients_users_groups_or_add_intents(client, reviewer, url):
    client.force_login(reviewer)

    assert client.get(reverse(url)).status_code == 403


def test_a_reviewer_can_read_an_intent_but_not_change_it(client, reviewer, intents):
    intent = Intent.objects.get(name="card_arrival")
    client.force_login(reviewer)
    url = reverse("admin:agents_intent_change", args=[intent.pk])

    assert client.get(url).status_code == 200
    response = client.post(url, {"name": "card_arrival", "threshold": 0.1})

    assert response.status_code == 403
    assert Intent.objects.get(pk=intent.pk).threshold == 0.9


def test_staff_outside_the_group_cannot_see_the_queue_and_view_only_staff_cannot_decide(client, escalate):
    review = escalate()
    staff = get_user_model().objects.create_user("stan", is_staff=True)
    client.force_login(staff)
    assert client.get(reverse("admin:reviews_review_changelist")).status_code == 403

    staff.user_permissions.add(*Group.objects.get(name=REVIEWERS_GROUP).permissions.filter(codename="view_review"))
    staff = get_user_model().objects.get(pk=staff.pk)  # fresh permission cache
    client.force_login(staff)
    url = reverse("admin:reviews_review_change", args=[review.pk])
    assert b"You can read this review but not decide it." in client.get(url).content
    assert client.post(url, {"_claim": "1"}).status_code == 403
    assert client.post(reverse("admin:reviews_review_claim_next")).status_code == 302
    assert Review.objects.get(pk=review.pk).status == ReviewStatus.OPEN


def test_create_reviewer_makes_a_staff_login_in_the_reviewers_group(client, capsys):
    call_command("create_reviewer", "nina", "--email", "nina@example.com")

    out = capsys.readouterr().out
    password = out.split("Password: ")[1].strip()
    user = get_user_model().objects.get(username="nina")
    assert user.is_staff and not user.is_superuser
    assert list(user.groups.values_list("name", flat=True)) == [REVIEWERS_GROUP]
    # The login form's authentication goes through django-axes, which needs the request.
    assert client.login(request=HttpRequest(), username="nina", password=password)
