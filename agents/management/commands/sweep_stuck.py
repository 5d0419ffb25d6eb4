"""`manage.py sweep_stuck`: re-enqueue in-flight tickets untouched for too long."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from agents.pipeline.sweeper import tickets_sweep_stuck


class Command(BaseCommand):
    help = "Re-enqueue tickets stuck in a non-terminal state (what celery beat does every 30 s)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", type=int, default=None, help="Seconds (default: settings).")

    def handle(self, *args: Any, older_than: int | None, **options: Any) -> None:
        self.stdout.write(f"Re-enqueued {tickets_sweep_stuck(older_than_seconds=older_than)} tickets.")
