"""`manage.py load_intents [PACK]`: create or update intents from a YAML/JSON pack."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from agents.intents.packs import PackError, intent_pack_load


class Command(BaseCommand):
    help = "Load an intent pack (default: settings.INTENT_PACK) into the database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("pack", nargs="?", default=None)

    def handle(self, *args: Any, pack: str | None, **options: Any) -> None:
        path = pack or settings.INTENT_PACK
        try:
            created, updated = intent_pack_load(path)
        except (OSError, PackError) as exc:
            raise CommandError(f"{path}: {exc}") from exc
        self.stdout.write(f"Loaded {path}: {created} intents created, {updated} updated.")
