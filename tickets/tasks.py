"""tickets' Celery tasks, found by the app's autodiscovery (project/celery.py)."""

from tickets.webhooks.tasks import deliver_callbacks

__all__ = ["deliver_callbacks"]
