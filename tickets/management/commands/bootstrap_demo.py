"""`manage.py bootstrap_demo`: a demo API client and an admin user for a first run, and how to use them."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from tickets.models import Client
from tickets.services import api_key_create, api_key_revoke, client_create

DEMO_CLIENT = "demo"


class Command(BaseCommand):
    help = "Create (or refresh) the demo client and admin user; development only."

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PRODUCTION:
            raise CommandError("bootstrap_demo creates well-known demo credentials; not in production")
        var = Path(settings.BASE_DIR) / "var"
        var.mkdir(exist_ok=True)
        client = Client.objects.filter(name=DEMO_CLIENT).first()
        if client is None:
            client, token = client_create(name=DEMO_CLIENT, key_name="demo")
        else:  # keys are stored hashed: a re-run issues a fresh one and revokes the old ones
            for old in client.api_keys.filter(revoked_at__isnull=True):
                api_key_revoke(key=old)
            _, token = api_key_create(client=client, name="demo")
        password = secrets.token_urlsafe(12)
        User = get_user_model()
        user = User.objects.filter(username="admin").first() or User(username="admin", email="admin@example.com")
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        flower = f"admin:{password}"
        (var / "demo_token").write_text(token)
        (var / "flower_auth").write_text(flower)
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "Demo credentials (development only; re-running `make run` issues new ones):",
                    f"  API key (client '{DEMO_CLIENT}'):  {token}",
                    f"  Webhook signing secret:  {client.webhook_secret}",
                    f"  Admin:   http://127.0.0.1:8000/admin/   user admin   password {password}",
                    f"  Flower:  http://127.0.0.1:5555/         user admin   password {password}",
                    "  API docs: http://127.0.0.1:8000/api/docs/",
                    "  Try:",
                    f"    curl -s -X POST http://127.0.0.1:8000/api/v1/tickets/ -H 'Authorization: Bearer {token}' \\",
                    "      -H 'Content-Type: application/json' -d '{\"body\": \"My card still has not arrived\"}'",
                    f"    curl -s http://127.0.0.1:8000/api/v1/tickets/ -H 'Authorization: Bearer {token}'",
                    "",
                ]
            )
        )
