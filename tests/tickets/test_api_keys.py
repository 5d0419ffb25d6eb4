"""API keys: several named per client, shown once, stored hashed, expiring, revocable, rotated
without downtime, last use recorded at most once a minute; created from the admin and the CLI."""

from __future__ import annotations

import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from tests.factories import client_with_token
from tickets import auth
from tickets.models import ApiKey, Client, hash_token
from tickets.services import api_key_create, api_key_revoke, api_key_rotate

URL = "/api/v1/tickets/"


def status_with(key: str) -> int:
    http = APIClient()
    http.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return http.get(URL).status_code


@pytest.fixture(autouse=True)
def _fresh_touch_memory():
    auth._touched.clear()
    yield
    auth._touched.clear()


def test_a_client_has_several_named_keys_each_stored_only_as_its_hash(db):
    client, first = client_with_token(name="acme")
    key, second = api_key_create(client=client, name="ci")
    assert status_with(first) == 200 and status_with(second) == 200
    assert second.startswith("sk_") and key.prefix == second[:11]
    assert key.key_hash == hash_token(second)
    stored = " ".join(str(v) for v in ApiKey.objects.values_list(flat=False))
    assert second not in stored and first not in stored
    assert set(client.api_keys.values_list("name", flat=True)) == {"default", "ci"}


def test_a_revoked_key_is_refused_at_once_and_the_clients_other_keys_still_work(db):
    client, first = client_with_token()
    key, second = api_key_create(client=client, name="ci")
    api_key_revoke(key=key)
    response = APIClient(HTTP_AUTHORIZATION=f"Bearer {second}").get(URL)
    assert response.status_code == 401 and response.json()["error"] == "authentication_failed"
    assert status_with(first) == 200


def test_an_expired_key_is_refused(db):
    client, _ = client_with_token()
    _, key = api_key_create(client=client, name="temp", expires_at=timezone.now() - timedelta(seconds=1))
    assert status_with(key) == 401
    _, later = api_key_create(client=client, name="later", expires_at=timezone.now() + timedelta(days=1))
    assert status_with(later) == 200


def test_rotating_a_key_keeps_the_old_one_working_through_the_grace_period(db):
    client, old_secret = client_with_token()
    old = client.api_keys.get()
    new, new_secret = api_key_rotate(key=old, grace=timedelta(hours=1))
    assert status_with(old_secret) == 200 and status_with(new_secret) == 200
    assert new.name == old.name and new.client_id == client.pk
    ApiKey.objects.filter(pk=old.pk).update(revoked_at=timezone.now() - timedelta(seconds=1))  # the hour is over
    assert status_with(old_secret) == 401 and status_with(new_secret) == 200


def test_an_inactive_client_is_refused_whatever_its_keys(db):
    client, key = client_with_token()
    Client.objects.filter(pk=client.pk).update(is_active=False)
    assert status_with(key) == 401


def test_the_last_use_is_written_at_most_once_a_minute_not_on_every_request(db):
    client, secret = client_with_token()
    key = client.api_keys.get()
    assert key.last_used_at is None
    with CaptureQueriesContext(connection) as queries:
        for _ in range(5):
            assert status_with(secret) == 200
    writes = [q for q in queries.captured_queries if q["sql"].startswith('UPDATE "tickets_apikey"')]
    assert len(writes) == 1
    key.refresh_from_db()
    assert key.last_used_at is not None and timezone.now() - key.last_used_at < timedelta(seconds=5)

    stale = timezone.now() - timedelta(minutes=2)  # a minute later (for the database and this process)
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=stale)
    auth._touched[key.pk] = stale
    assert status_with(secret) == 200
    key.refresh_from_db()
    assert key.last_used_at > stale


def test_the_key_check_is_one_read(db):
    _, secret = client_with_token()
    auth.client_by_key(secret)  # the first use writes last_used_at
    with CaptureQueriesContext(connection) as queries:
        found = auth.client_by_key(secret)
    assert found is not None and len(queries.captured_queries) == 1


def test_create_client_prints_the_signing_secret_and_then_the_key_alone_on_the_last_line(db):
    out, err = StringIO(), StringIO()
    call_command("create_client", "cli-client", "--callback-url", "https://example.com/hook", stdout=out, stderr=err)
    lines = out.getvalue().strip().splitlines()
    client = Client.objects.get(name="cli-client")
    assert lines[0] == f"webhook signing secret: {client.webhook_secret}" and client.webhook_secret.startswith("whsec_")
    assert status_with(lines[-1]) == 200
    assert "shown once" in err.getvalue()


def test_create_and_revoke_api_key_commands(db):
    client, _ = client_with_token(name="ops")
    out = StringIO()
    call_command("create_api_key", "ops", "production", "--expires-in", "90d", stdout=out, stderr=StringIO())
    secret = out.getvalue().strip().splitlines()[-1]
    key = client.api_keys.get(name="production")
    assert status_with(secret) == 200
    assert timedelta(days=89) < key.expires_at - timezone.now() <= timedelta(days=90)

    call_command("revoke_api_key", key.prefix, stdout=StringIO())
    assert status_with(secret) == 401


def test_the_commands_refuse_bad_input_with_a_clear_message_and_change_nothing(db):
    from django.core.management.base import CommandError

    client_with_token(name="ops")
    before = ApiKey.objects.count()
    with pytest.raises(CommandError, match="no client named"):
        call_command("create_api_key", "nobody", "x", stdout=StringIO(), stderr=StringIO())
    with pytest.raises(CommandError, match="not a duration"):
        call_command("create_api_key", "ops", "x", "--expires-in", "soon", stdout=StringIO(), stderr=StringIO())
    with pytest.raises(CommandError, match="0 keys match"):
        call_command("revoke_api_key", "sk_nothing", stdout=StringIO())
    with pytest.raises(CommandError, match="exists already"):
        call_command("create_client", "ops", stdout=StringIO(), stderr=StringIO())
    assert ApiKey.objects.count() == before and Client.objects.count() == 1


@pytest.fixture
def staff(admin_client):
    return admin_client


def _shown(response) -> str:
    return " ".join(str(m) for m in response.context["messages"])


def test_adding_clients_in_the_admin_shows_a_working_key_and_the_signing_secret_once(staff):
    for name in ("first", "second"):  # a second client used to break a unique constraint
        response = staff.post("/admin/tickets/client/add/", {"name": name, "callback_url": "", "is_active": "on",
                              "api_keys-TOTAL_FORMS": "0", "api_keys-INITIAL_FORMS": "0"}, follow=True)  # fmt: skip
        assert response.status_code == 200, response.content[:500]
        shown = _shown(response)
        key = re.search(r"sk_[\w-]+", shown).group(0)
        client = Client.objects.get(name=name)
        assert client.webhook_secret in shown and status_with(key) == 200
    page = staff.get(f"/admin/tickets/client/{client.pk}/change/").content.decode()
    assert client.webhook_secret not in page and key not in page  # shown once, never again


def test_adding_an_api_key_in_the_admin_shows_it_once_and_it_works(staff):
    client, _ = client_with_token(name="acme")
    response = staff.post("/admin/tickets/apikey/add/", {"client": client.pk, "name": "ci"}, follow=True)
    key = re.search(r"sk_[\w-]+", _shown(response)).group(0)
    assert status_with(key) == 200
    stored = client.api_keys.get(name="ci")
    assert key not in staff.get(f"/admin/tickets/apikey/{stored.pk}/change/").content.decode()
    staff.post("/admin/tickets/apikey/", {"action": "revoke", "_selected_action": [stored.pk]}, follow=True)
    assert status_with(key) == 401
