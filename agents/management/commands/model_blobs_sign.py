"""`manage.py model_blobs_sign`: sign the local model blobs stored before signing existed (run once,
after the upgrade that brought signing; docs/local-model.md, "Signed model blobs")."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agents.intents.blobs import unsigned_blobs_sign


class Command(BaseCommand):
    help = "Sign the unsigned local model blobs under SECRET_KEY; report those whose signature does not verify."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Say what would be signed; change nothing.")

    def handle(self, *args: Any, dry_run: bool, **options: Any) -> None:
        done = unsigned_blobs_sign(dry_run=dry_run)
        verb = "would sign" if dry_run else "signed"
        self.stdout.write(f"{verb} {len(done['signed'])}: {', '.join(done['signed']) or '-'}")
        self.stdout.write(f"verified {len(done['verified'])}: {', '.join(done['verified']) or '-'}")
        if done["refused"]:
            raise CommandError(
                f"{len(done['refused'])} signed blob(s) do not verify under SECRET_KEY or SECRET_KEY_FALLBACKS, "
                f"left refused: {', '.join(done['refused'])} (retrain, or delete these versions)"
            )
