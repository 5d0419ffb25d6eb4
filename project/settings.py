"""Settings, all from the environment (see `.env.example`).

`DJANGO_ENV=production` makes `SECRET_KEY` required and turns debug off. With `DATABASE_URL` /
`REDIS_URL` unset, an embedded Postgres and Redis start under `var/` (see `project/embedded.py`).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from project import embedded
from project.logging import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent
ENV = os.environ.get("DJANGO_ENV", "development")
PRODUCTION = ENV == "production"


def _env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).lower() in ("1", "true", "yes", "on")


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


if PRODUCTION:
    SECRET_KEY = os.environ.get("SECRET_KEY", "")
    if not SECRET_KEY:
        raise ImproperlyConfigured("SECRET_KEY is required when DJANGO_ENV=production")
else:
    # A development-only key; production refuses to start without its own.
    SECRET_KEY = os.environ.get("SECRET_KEY", "dev-only-insecure-key-do-not-use-in-production")

DEBUG = _env_bool("DEBUG", not PRODUCTION)
ALLOWED_HOSTS = [h for h in os.environ.get("ALLOWED_HOSTS", "*" if not PRODUCTION else "").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_prometheus",
    "tickets",
    "agents",
    "reviews",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "tickets.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Postgres (the system of record) and Redis (broker, shared limiter, cache) ---------------
if os.environ.get("DATABASE_URL"):
    DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=60)}
else:
    DATABASES = {"default": {**embedded.database_settings(), "CONN_MAX_AGE": 60}}
DATABASES["default"]["ENGINE"] = "django_prometheus.db.backends.postgresql"
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Server-side parameters and prepared statements (psycopg prepares a statement the 5th time a
# connection runs it): Postgres parses and plans the hot path's few statements once per connection,
# which took a third off its CPU per ticket in the benchmark (docs/performance.md). Set
# DB_SERVER_SIDE_BINDING=0 behind a pooler in transaction mode (PgBouncer < 1.21), which cannot
# keep a connection's prepared statements.
if _env_bool("DB_SERVER_SIDE_BINDING", True):
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        server_side_binding=True, prepare_threshold=int(os.environ.get("DB_PREPARE_THRESHOLD", 5))
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL") or embedded.redis_url()
# pytest sets PYTEST_VERSION: tests use their own Redis database, so a test worker never takes
# tasks queued by a system running beside it on the same server.
TESTING = "PYTEST_VERSION" in os.environ
# Each test session gets its own database and its own broker keys, so two sessions on one machine
# (or a test session beside `make run`) never take each other's tasks or rows.
TEST_RUN_ID = os.environ.get("TEST_RUN_ID") or str(os.getpid())
BROKER_KEY_PREFIX = f"test{TEST_RUN_ID}:" if TESTING else ""
if TESTING:
    REDIS_URL = os.environ.get("REDIS_TEST_URL") or urlsplit(REDIS_URL)._replace(path="/15").geturl()
    DATABASES["default"]["TEST"] = {"NAME": f"test_agents_{TEST_RUN_ID}"}
CELERY_BROKER_URL = (not TESTING and os.environ.get("CELERY_BROKER_URL")) or REDIS_URL
CACHES = {
    "default": {
        "BACKEND": "project.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "ap") + BROKER_KEY_PREFIX,
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

# --- The public API ---------------------------------------------------------------------------
# Backpressure: above this many messages waiting in the stage queues, POST /tickets/ answers 503
# with Retry-After instead of letting queues grow without bound (checked at most once a second).
BACKPRESSURE_MAX_QUEUED = int(os.environ.get("BACKPRESSURE_MAX_QUEUED", 50_000))
BACKPRESSURE_RETRY_AFTER = int(os.environ.get("BACKPRESSURE_RETRY_AFTER", 5))
# Requests larger than this are refused with 413 before any parsing (documented in the README).
MAX_REQUEST_BYTES = int(os.environ.get("MAX_REQUEST_BYTES", 64 * 1024))
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BYTES
TICKET_BODY_MAX_CHARS = int(os.environ.get("TICKET_BODY_MAX_CHARS", 20_000))

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tickets.auth.ClientTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tickets.auth.IsClient"],
    "DEFAULT_THROTTLE_CLASSES": ["tickets.auth.ClientRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"client": os.environ.get("CLIENT_THROTTLE_RATE", "6000/min")},
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "tickets.api_errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Agent pipeline API",
    "DESCRIPTION": "Submit customer requests; read their resolution and per-stage trace.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # OpenAPI 3.1 for its `webhooks`: the callbacks, one per event (tickets/schema.py).
    "OAS_VERSION": "3.1.0",
    "WEBHOOKS": [f"tickets.schema.{name}" for name in ("RESOLVED", "AWAITING_REVIEW", "DEAD_LETTERED")],
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "tickets.schema.postprocess"],
    "SWAGGER_UI_SETTINGS": {"persistAuthorization": True},
}

# --- The pipeline -----------------------------------------------------------------------------
PIPELINE = {
    # How many attempts a stage gets before its ticket is dead-lettered.
    "MAX_ATTEMPTS": int(os.environ.get("PIPELINE_MAX_ATTEMPTS", 5)),
    # A ticket put off by the shared rate limit (not a failure, not an attempt) pays attempts again
    # once it is this old.
    "DEFER_MAX_SECONDS": int(os.environ.get("PIPELINE_DEFER_MAX_SECONDS", 3600)),
    # Exponential backoff with full jitter: delay = uniform(0, min(cap, base * 2**attempt)).
    "BACKOFF_BASE_SECONDS": _env_float("PIPELINE_BACKOFF_BASE_SECONDS", 1.0),
    "BACKOFF_CAP_SECONDS": _env_float("PIPELINE_BACKOFF_CAP_SECONDS", 300.0),
    # Tickets sitting in a non-terminal state longer than this are re-enqueued by the sweeper.
    "STUCK_AFTER_SECONDS": int(os.environ.get("PIPELINE_STUCK_AFTER_SECONDS", 300)),
    "WEBHOOK_TIMEOUT_SECONDS": _env_float("WEBHOOK_TIMEOUT_SECONDS", 10.0),
    "CALLBACK_MAX_ATTEMPTS": int(os.environ.get("CALLBACK_MAX_ATTEMPTS", 8)),
    # Callbacks go out in batches (agents/callbacks.py): a drain starts at most this long after a
    # ticket settles, claims up to CALLBACK_BATCH_SIZE due callbacks at a time and POSTs them on
    # CALLBACK_CONCURRENCY threads.
    "CALLBACK_BATCH_WINDOW_MS": int(os.environ.get("CALLBACK_BATCH_WINDOW_MS", 100)),
    "CALLBACK_BATCH_SIZE": int(os.environ.get("CALLBACK_BATCH_SIZE", 64)),
    "CALLBACK_CONCURRENCY": int(os.environ.get("CALLBACK_CONCURRENCY", 16)),
    # How long a ticket waits before re-checking that its customer's older requests have settled.
    "CUSTOMER_WAIT_SECONDS": _env_float("PIPELINE_CUSTOMER_WAIT_SECONDS", 0.5),
    # The customer's last N interactions given to decide (and shown to reviewers).
    "HISTORY_SIZE": int(os.environ.get("HISTORY_SIZE", 8)),
    "HOLDING_REPLY": os.environ.get(
        "HOLDING_REPLY",
        "Thanks for getting in touch. A member of our team is looking at your request and will reply shortly.",
    ),
}
INTENT_PACK = os.environ.get("INTENT_PACK", str(BASE_DIR / "agents" / "packs" / "banking77.yaml"))
# agents never imports reviews: escalation reaches the review queue through this hook.
ESCALATION_HANDLER = os.environ.get("ESCALATION_HANDLER", "reviews.services.review_create_from_escalation")
TICKET_REPLAY_HANDLER = "agents.pipeline.ticket_replay"
CLASSIFIER_TIERS = [
    t
    for t in os.environ.get("CLASSIFIER_TIERS", "agents.tiers.rules.RulesTier,agents.tiers.local.LocalModelTier").split(
        ","
    )
    if t
]

ANTHROPIC_API_KEY = os.environ.get("ANTHROPIC_API_KEY", "")
ANTHROPIC_BASE_URL = os.environ.get("ANTHROPIC_BASE_URL", "")
# The network-bound tier runs on the `llm` queue only when an API key is configured.
LLM_ENABLED = bool(ANTHROPIC_API_KEY)
LLM_TIER = os.environ.get("LLM_TIER", "agents.llm.tier.ClaudeTier")

# --- The Claude tier (agents/llm; every key, its default and its meaning: agents/llm/config.py) -
# Prices (USD per million tokens) live only in agents.llm.config.DEFAULTS; override them here by class.
LLM = {
    "MODELS": {
        "small": {"id": os.environ.get("LLM_SMALL_MODEL", "claude-haiku-4-5")},
        "large": {"id": os.environ.get("LLM_LARGE_MODEL", "claude-sonnet-4-6")},
    },
    # The account's limits per model class, for all workers together (0 = unlimited).
    "LIMITS": {
        "small": {
            "rpm": int(os.environ.get("LLM_SMALL_RPM", 50)),
            "itpm": int(os.environ.get("LLM_SMALL_ITPM", 50_000)),
            "otpm": int(os.environ.get("LLM_SMALL_OTPM", 10_000)),
        },
        "large": {
            "rpm": int(os.environ.get("LLM_LARGE_RPM", 50)),
            "itpm": int(os.environ.get("LLM_LARGE_ITPM", 30_000)),
            "otpm": int(os.environ.get("LLM_LARGE_OTPM", 8_000)),
        },
    },
    "MAX_IN_FLIGHT": int(os.environ.get("LLM_MAX_IN_FLIGHT", 32)),
    # Keep llm worker processes x threads <= rpm/60 x (this + typical latency); see docs/claude-tier.md.
    "MAX_WAIT_SECONDS": _env_float("LLM_MAX_WAIT_SECONDS", 40.0),
    "TIMEOUT_SECONDS": _env_float("LLM_TIMEOUT_SECONDS", 30.0),
    "CACHE_TTL_SECONDS": int(os.environ.get("LLM_CACHE_TTL_SECONDS", 86_400)),
    # Per client and UTC day; unset: no budget. LLM_CLIENT_BUDGETS_USD="acme=5,42=20" (name or id).
    "DAILY_BUDGET_USD": _env_float("LLM_DAILY_BUDGET_USD", 0.0) or None,
    "CLIENT_BUDGETS_USD": {
        who.strip(): float(usd)
        for who, _, usd in (p.partition("=") for p in os.environ.get("LLM_CLIENT_BUDGETS_USD", "").split(",") if p)
    },
    "OVER_BUDGET": os.environ.get("LLM_OVER_BUDGET", "downgrade"),  # or "human"
    "DRAFT": {"history_size": PIPELINE["HISTORY_SIZE"]},
    # Low-priority tickets through the Message Batches API; max_wait below STUCK_AFTER_SECONDS.
    "BATCH": {
        "enabled": _env_bool("LLM_BATCH_ENABLED", True),
        "size": int(os.environ.get("LLM_BATCH_SIZE", 100)),
        "max_age_seconds": _env_float("LLM_BATCH_MAX_AGE_SECONDS", 60.0),
        "max_wait_seconds": _env_float("LLM_BATCH_MAX_WAIT_SECONDS", 240.0),
    },
}

# --- Observability (docs/observability.md) ---------------------------------------------------
OBSERVABILITY = {
    "LLM_BUDGET_USD_PER_DAY": _env_float("LLM_BUDGET_USD_PER_DAY", 100.0),
    "REVIEW_SLA_SECONDS": int(os.environ.get("REVIEW_SLA_SECONDS", 4 * 3600)),
    "STATE_CACHE_SECONDS": _env_float("METRICS_STATE_CACHE_SECONDS", 10.0),
}
TRACE_RETENTION = {
    "ARCHIVE_AFTER_DAYS": _env_float("TRACE_ARCHIVE_AFTER_DAYS", 30.0),
    "BATCH_SIZE": int(os.environ.get("TRACE_ARCHIVE_BATCH_SIZE", 5000)),
    "TIME_BUDGET_SECONDS": _env_float("TRACE_ARCHIVE_TIME_BUDGET_SECONDS", 45.0),
    "STORAGE": os.environ.get("TRACE_ARCHIVE_STORAGE", "agents.retention.LocalArchiveStorage"),
    "STORAGE_OPTIONS": {"location": os.environ.get("TRACE_ARCHIVE_DIR", str(BASE_DIR / "var" / "archive" / "traces"))},
}
LOGGING = logging_config(
    level=os.environ.get("LOG_LEVEL", "INFO"), json_lines=os.environ.get("LOG_FORMAT", "json") != "plain"
)
