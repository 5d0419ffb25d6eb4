"""`manage.py create_api_key CLIENT NAME [--expires-in 90d]`: prints the new key alone on the last line."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from tickets.management.durations import duration
from tickets.models import Client
from tickets.services import api_key_create


class Command(BaseCommand):
    help = "Add a named API key to a client; print it once (alone on the last line)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("client", help="The client's name.")
        parser.add_argument("name", help="What the key is for, e.g. 'production' or 'ci'.")
        parser.add_argument("--expires-in", type=duration, default=None, help="e.g. 90d; default: never.")

    def handle(self, *args: Any, client: str, name: str, expires_in: Any, **options: Any) -> None:
        owner = Client.objects.filter(name=client).first()
        if owner is None:
            raise CommandError(f"no client named {client!r}")
        expires_at = timezone.now() + expires_in if expires_in is not None else None
        key, secret = api_key_create(client=owner, name=name, expires_at=expires_at)
        until = f"until {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else "with no expiry"
        self.stderr.write(f"API key {name!r} ({key.prefix}…) of {owner.name!r}, {until}; shown once:")
        self.stdout.write(secret)
