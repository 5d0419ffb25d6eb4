from __future__ import annotations

from django.apps import AppConfig


class TicketsConfig(AppConfig):
    name = "tickets"

    def ready(self) -> None:
        from tickets.api import schema  # noqa: F401 - registers the bearer scheme with drf-spectacular
