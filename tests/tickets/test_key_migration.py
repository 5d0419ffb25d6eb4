"""The migration to API keys: a token issued before it keeps working, and the client's webhook
secret becomes `whsec_` with the same HMAC key bytes."""

from __future__ import annotations

import base64
import hashlib
import secrets

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tickets.auth import client_by_key

BEFORE, AFTER = [("tickets", "0002_callback_due")], [("tickets", "0003_api_keys_and_webhook_secrets")]


@pytest.mark.django_db(transaction=True)
def test_a_token_issued_before_the_migration_keeps_working_after_it():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps.get_model("tickets", "Client")
    token, hex_secret = secrets.token_urlsafe(32), secrets.token_hex(32)
    old.objects.create(
        name="legacy", token_hash=hashlib.sha256(token.encode()).hexdigest(), token_prefix=token[:8],
        webhook_secret=hex_secret,
    )  # fmt: skip
    try:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(AFTER)
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
        found = client_by_key(token)
        assert found is not None
        client, _ = found
        assert client.name == "legacy"
        assert base64.b64decode(client.webhook_secret.removeprefix("whsec_")) == hex_secret.encode()
        assert client.api_keys.get().prefix == token[:8]
    finally:
        from tickets.models import Client

        Client.objects.filter(name="legacy").delete()
