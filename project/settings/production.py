"""Production: nothing from the lab. The servers, the secret key and the hosts must be given; the
embedded servers and the tooling app are never used."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from project.settings.base import *  # noqa: F403
from project.settings.base import database_from_url, servers
from project.settings.env import env

ENV = "production"
PRODUCTION = True


def _required(name: str) -> str:
    value = env.str(name, default="")
    if not value:
        raise ImproperlyConfigured(
            f"{name} is required when DJANGO_ENV=production (the embedded servers are for development)"
        )
    return value


SECRET_KEY = _required("SECRET_KEY")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])
globals().update(
    servers(
        database_from_url(_required("DATABASE_URL")),
        _required("REDIS_URL"),
        broker_url=env.str("CELERY_BROKER_URL", default=""),
    )
)
