"""A laptop or a first run: debug on, any host, and an embedded Postgres and Redis under `var/`
(started on first use) for whichever of `DATABASE_URL` / `REDIS_URL` is unset. The tooling app
(the simulator, the benchmark's commands) is installed here, never in production."""

from __future__ import annotations

from project import embedded
from project.settings.base import *  # noqa: F403
from project.settings.base import INSTALLED_APPS, database_from_url, servers
from project.settings.env import env

ENV = "development"
PRODUCTION = False
SECRET_KEY = env.str("SECRET_KEY", default="dev-only-insecure-key-do-not-use-in-production")
DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"])
INSTALLED_APPS = [*INSTALLED_APPS, "tooling"]

_database_url = env.str("DATABASE_URL", default="")
_database = database_from_url(_database_url) if _database_url else embedded.database_settings()
globals().update(
    servers(
        _database,
        env.str("REDIS_URL", default="") or embedded.redis_url(),
        broker_url=env.str("CELERY_BROKER_URL", default=""),
    )
)
