"""`manage.py create_reviewer USERNAME`: a staff login that can work the review queue, nothing more."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from reviews.services import reviewer_create


class Command(BaseCommand):
    help = "Create (or reset) a reviewer: a staff user in the `reviewers` group."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--email", default="")
        parser.add_argument("--password", default=None, help="Default: a random one, printed once.")

    def handle(self, *args: Any, username: str, email: str, password: str | None, **options: Any) -> None:
        user, generated = reviewer_create(username=username, email=email, password=password)
        self.stdout.write(f"Reviewer {user.get_username()} can log in at /admin/.")
        if generated:
            self.stdout.write(f"Password: {generated}")
