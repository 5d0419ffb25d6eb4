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
    if not value or (name == "SECRET_KEY" and (len(value) < 50 or value.startswith("dev-only"))):
        raise ImproperlyConfigured(
            f"{name} is required when DJANGO_ENV=production (the embedded servers are for development)"
        )
    return value


SECRET_KEY = _required("SECRET_KEY")
# Debug pages show settings, SQL and tracebacks to whoever triggers an error: never in production.
if env.bool("DEBUG", default=False):
    raise ImproperlyConfigured("DEBUG cannot be on when DJANGO_ENV=production")
DEBUG = False
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])
# HTTPS only (`manage.py check --deploy` is clean): behind a proxy that terminates TLS, it sets
# X-Forwarded-Proto and SECURE_PROXY_SSL_HEADER says so; the probes' paths stay reachable over HTTP.
# Compose on one host serves plain HTTP on localhost and sets SECURE_SSL_REDIRECT=0.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)
# Subdomains and the browsers' preload list are the domain owner's choice (a preload is hard to
# undo and binds every subdomain): off unless asked for.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# `check --deploy` asks for both (W005, W021): left off on purpose, so those two are silenced.
SILENCED_SYSTEM_CHECKS = [
    *(["security.W005"] if not SECURE_HSTS_INCLUDE_SUBDOMAINS else []),
    *(["security.W021"] if not SECURE_HSTS_PRELOAD else []),
]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
globals().update(
    servers(
        database_from_url(_required("DATABASE_URL")),
        _required("REDIS_URL"),
        broker_url=env.str("CELERY_BROKER_URL", default=""),
    )
)
