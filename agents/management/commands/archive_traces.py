"""`manage.py archive_traces`: what beat runs — archive old traces to JSONL.gz, then delete them."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from agents.retention import option, traces_archive


class Command(BaseCommand):
    help = "Archive traces of settled tickets older than the retention age, in batches, then delete them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than-days",
            type=float,
            default=None,
            help=f"Age in days (default: settings, {option('ARCHIVE_AFTER_DAYS')}).",
        )
        parser.add_argument("--batch-size", type=int, default=None, help="Rows per archive object.")
        parser.add_argument(
            "--time-budget",
            type=float,
            default=None,
            help="Stop starting new batches after this many seconds (default: settings).",
        )
        parser.add_argument("--until-done", action="store_true", help="No time budget: archive everything due.")

    def handle(
        self,
        *args: Any,
        older_than_days: float | None,
        batch_size: int | None,
        time_budget: float | None,
        until_done: bool,
        **options: Any,
    ) -> None:
        report = traces_archive(
            older_than=timedelta(days=older_than_days) if older_than_days is not None else None,
            batch_size=batch_size,
            time_budget=float("inf") if until_done else time_budget,
        )
        self.stdout.write(json.dumps(report.as_dict(), indent=2))
