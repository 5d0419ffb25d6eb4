"""`manage.py revoke_api_key PREFIX [--in 24h]`: refuse a key, now or after a grace period."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from tickets.management.durations import duration
from tickets.models import ApiKey
from tickets.services import api_key_revoke


class Command(BaseCommand):
    help = "Revoke an API key, found by its visible prefix (e.g. sk_AbCd1234) or its id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("key", help="The key's prefix, or its id.")
        parser.add_argument("--in", dest="grace", type=duration, default=None, help="e.g. 24h: still works until then.")

    def handle(self, *args: Any, key: str, grace: Any, **options: Any) -> None:
        found = list(ApiKey.objects.filter(prefix=key) if not key.isdigit() else ApiKey.objects.filter(pk=int(key)))
        if len(found) != 1:
            raise CommandError(f"{len(found)} keys match {key!r}; give the key's id (see the admin)")
        at = timezone.now() + grace if grace is not None else None
        revoked = api_key_revoke(key=found[0], at=at)
        self.stdout.write(
            f"API key {revoked.name!r} ({revoked.prefix}…) refused from {revoked.revoked_at:%Y-%m-%d %H:%M:%S} UTC"
        )
