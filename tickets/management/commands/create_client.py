"""`manage.py create_client NAME`: the webhook signing secret, then the API key alone on the last line."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from project.netguard import BlockedURL, check_url
from tickets.models import Client
from tickets.services import client_create


class Command(BaseCommand):
    help = "Create an API client; print its webhook signing secret and its API key (alone on the last line)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--callback-url", default="", help="Default callback URL for its tickets.")
        parser.add_argument("--key-name", default="default", help="Name of its first API key.")

    def handle(self, *args: Any, name: str, callback_url: str, key_name: str, **options: Any) -> None:
        if callback_url:
            try:
                check_url(callback_url)
            except BlockedURL as exc:
                raise CommandError(f"--callback-url {callback_url!r} may not be called back: {exc}") from exc
        if Client.objects.filter(name=name).exists():
            raise CommandError(f"a client named {name!r} exists already")
        client, key = client_create(name=name, callback_url=callback_url, key_name=key_name)
        self.stderr.write(
            f"Created client {client.name!r} (id {client.pk}). Its webhook signing secret and API key "
            f"{key_name!r} are shown once (stored: the key only as a hash):"
        )
        self.stdout.write(f"webhook signing secret: {client.webhook_secret}")
        self.stdout.write(key)
