"""Standard Webhooks signatures (tickets/webhooks/signing.py), verified with the `standardwebhooks` package
as a client would; rotation signs with both secrets through the overlap, then with the new alone."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.factories import client_with_token
from tickets.models import Client
from tickets.webhooks import signing as webhooks
from tickets.webhooks.signing import webhook_headers, webhook_secret_rotate

BODY = json.dumps({"event": "ticket.resolved", "ticket": {"id": "t-1"}}).encode()


@pytest.fixture(autouse=True)
def _no_cached_predecessors():
    webhooks._previous.clear()
    yield
    webhooks._previous.clear()


def accepts(secret: str, headers: dict[str, str], body: bytes = BODY) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


def test_a_callback_carries_the_three_standard_headers_and_verifies_with_the_clients_secret(db):
    client, _ = client_with_token()
    headers = webhook_headers(secret=client.webhook_secret, msg_id="t-1:callback:resolved", body=BODY)
    assert headers["webhook-id"] == "t-1:callback:resolved"
    assert abs(int(headers["webhook-timestamp"]) - timezone.now().timestamp()) < 5
    assert headers["webhook-signature"].startswith("v1,") and " " not in headers["webhook-signature"]
    assert accepts(client.webhook_secret, headers)
    assert not accepts(client.webhook_secret, headers, BODY + b" ")
    other, _ = client_with_token()
    assert not accepts(other.webhook_secret, headers)


def test_a_stale_timestamp_is_refused_by_the_receiver(db):
    client, _ = client_with_token()
    at = timezone.now() - timedelta(minutes=10)
    headers = webhook_headers(secret=client.webhook_secret, msg_id="m", body=BODY, at=at)
    assert not accepts(client.webhook_secret, headers)


def test_after_a_rotation_both_secrets_verify_through_the_overlap_and_only_the_new_one_after(db):
    client, _ = client_with_token()
    old = client.webhook_secret
    new = webhook_secret_rotate(client=client, overlap=timedelta(hours=1))
    assert new != old and new.startswith("whsec_") and client.webhook_secret == new

    during = webhook_headers(secret=new, msg_id="m", body=BODY)
    assert len(during["webhook-signature"].split(" ")) == 2
    assert accepts(old, during) and accepts(new, during)

    after = webhook_headers(secret=new, msg_id="m", body=BODY, at=timezone.now() + timedelta(hours=1, seconds=1))
    assert len(after["webhook-signature"].split(" ")) == 1
    assert (
        Webhook(new).sign("m", timezone.now() + timedelta(hours=1, seconds=1), BODY.decode())
        == after["webhook-signature"]
    )


def test_a_rotation_with_no_overlap_stops_the_old_secret_at_once(db):
    client, _ = client_with_token()
    old = client.webhook_secret
    new = webhook_secret_rotate(client=client, overlap=timedelta(0))
    headers = webhook_headers(secret=new, msg_id="m", body=BODY)
    assert accepts(new, headers) and not accepts(old, headers)


def test_rotate_webhook_secret_prints_the_new_secret_alone_on_the_last_line(db):
    client, _ = client_with_token(name="acme")
    old = client.webhook_secret
    out = StringIO()
    call_command("rotate_webhook_secret", "acme", "--overlap", "2h", stdout=out, stderr=StringIO())
    client.refresh_from_db()
    assert out.getvalue().strip().splitlines()[-1] == client.webhook_secret != old
    assert client.webhook_secret_previous == old
    assert timedelta(minutes=119) < client.webhook_secret_previous_until - timezone.now() <= timedelta(hours=2)


def test_the_admin_rotates_a_secret_and_shows_the_new_one_once(admin_client, db):
    client, _ = client_with_token(name="acme")
    response = admin_client.post(
        "/admin/tickets/client/", {"action": "rotate_webhook_secret", "_selected_action": [client.pk]}, follow=True
    )
    client.refresh_from_db()
    assert client.webhook_secret in " ".join(str(m) for m in response.context["messages"])
    assert Client.objects.get(pk=client.pk).webhook_secret_previous != ""
