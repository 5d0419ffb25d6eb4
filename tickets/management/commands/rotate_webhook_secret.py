"""`manage.py rotate_webhook_secret CLIENT [--overlap 24h]`: prints the new secret alone on the last line."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tickets.management.durations import duration
from tickets.models import Client
from tickets.webhooks.signing import DEFAULT_OVERLAP, webhook_secret_rotate


class Command(BaseCommand):
    help = "Give a client a new webhook signing secret; the old one keeps signing too during the overlap."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("client", help="The client's name.")
        parser.add_argument(
            "--overlap", type=duration, default=DEFAULT_OVERLAP, help="Default 24h; 0 ends the old now."
        )

    def handle(self, *args: Any, client: str, overlap: Any, **options: Any) -> None:
        owner = Client.objects.filter(name=client).first()
        if owner is None:
            raise CommandError(f"no client named {client!r}")
        secret = webhook_secret_rotate(client=owner, overlap=overlap)
        self.stderr.write(
            f"New webhook signing secret of {owner.name!r} (the old one signs too for {overlap}); shown once:"
        )
        self.stdout.write(secret)
