"""Settings every environment shares, all read from the environment (and `.env`, see
`project/settings/env.py`) with one pattern: `env.<type>(NAME, default=...)`. Every variable and its
default: `.env.example`. The servers (Postgres, Redis) are chosen by `development`, `production` and
`test` through `servers(...)`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import dj_database_url

from project.logging import logging_config
from project.settings.env import BASE_DIR, env

DEBUG = False
ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=[])

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
    "axes",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # Probes and the scrape before the Host check: kubelet and Prometheus use the pod's IP (deploy, #14).
    "project.health.ProbeMiddleware",
    "tickets.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]
# Admin logins are throttled (django-axes): after AXES_FAILURE_LIMIT failures for one username from
# one address, that pair is locked out for AXES_COOLOFF_MINUTES; the API's bearer keys are not affected.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Behind TRUSTED_PROXY_COUNT reverse proxies (the ingress, a load balancer) the peer is the nearest
# proxy; the client is the address the outermost of them saw, in CLIENT_ADDRESS_HEADER (each proxy
# appends the address it saw). 0: the peer address; the header, which a client can write, is ignored.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
CLIENT_ADDRESS_HEADER = env.str("CLIENT_ADDRESS_HEADER", default="X-Forwarded-For")
AXES_CLIENT_IP_CALLABLE = "project.access.client_address"
# `/metrics` answers only these networks (the peer address) or a bearer METRICS_TOKEN (project/access.py).
METRICS_ALLOWED_CIDRS = env.list("METRICS_ALLOWED_CIDRS", default=["127.0.0.0/8", "::1/128"])
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# A second port of the web server (gunicorn --bind 0.0.0.0:<port>) where /metrics answers anyone who
# reaches it: for a port no Service or Ingress routes (the chart's 9100). 0: none.
METRICS_PORT = env.int("METRICS_PORT", default=0)

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
# Behind a pooler in transaction mode (PgBouncer: compose and the chart) a server connection serves
# another client after each transaction, so nothing may outlive one: no server-side binding or
# prepared statements, no server-side (named) cursors. The database's TimeZone must be UTC there too,
# or Django sets it per connection (the compose and chart Postgres run with timezone=UTC).
DB_TRANSACTION_POOLING = env.bool("DB_TRANSACTION_POOLING", default=False)
DB_SERVER_SIDE_BINDING = env.bool("DB_SERVER_SIDE_BINDING", default=not DB_TRANSACTION_POOLING)
DB_PREPARE_THRESHOLD = env.int("DB_PREPARE_THRESHOLD", default=5)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Test sessions keep their queues, caches and flags apart (project/settings/test.py).
BROKER_KEY_PREFIX = ""


def servers(database: dict[str, Any], redis_url: str, broker_url: str = "", key_prefix: str = "") -> dict[str, Any]:
    """DATABASES, REDIS_URL, CELERY_BROKER_URL and CACHES for the given servers."""
    database = {**database, "ENGINE": "django_prometheus.db.backends.postgresql", "CONN_HEALTH_CHECKS": True}
    database.setdefault("CONN_MAX_AGE", 60)
    # Server-side parameters and prepared statements (psycopg prepares a statement the 5th time a
    # connection runs it): Postgres parses and plans the hot path's few statements once per
    # connection, which took a third off its CPU per ticket in the benchmark (docs/performance.md).
    # Off behind a pooler in transaction mode (DB_TRANSACTION_POOLING).
    if DB_SERVER_SIDE_BINDING:
        options = {"server_side_binding": True, "prepare_threshold": DB_PREPARE_THRESHOLD}
        database["OPTIONS"] = {**database.get("OPTIONS", {}), **options}
    if DB_TRANSACTION_POOLING:
        database["DISABLE_SERVER_SIDE_CURSORS"] = True
    cache = {"BACKEND": "project.cache.RedisCache", "LOCATION": redis_url}
    cache["KEY_PREFIX"] = env.str("CACHE_KEY_PREFIX", default="ap") + key_prefix
    return {
        "DATABASES": {"default": database},
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": broker_url or redis_url,
        "CACHES": {"default": cache},
    }


def database_from_url(url: str) -> dict[str, Any]:
    return dict(dj_database_url.parse(url, conn_max_age=60))


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
BACKPRESSURE_MAX_QUEUED = env.int("BACKPRESSURE_MAX_QUEUED", default=50_000)
BACKPRESSURE_RETRY_AFTER = env.int("BACKPRESSURE_RETRY_AFTER", default=5)
# A tenant may hold max(BACKPRESSURE_TENANT_FLOOR, BACKPRESSURE_MAX_IN_FLIGHT / active tenants) tickets
# in flight; past its share its new work is refused with 429 (agents/pipeline/tenants.py).
BACKPRESSURE_MAX_IN_FLIGHT = env.int("BACKPRESSURE_MAX_IN_FLIGHT", default=50_000)
BACKPRESSURE_TENANT_FLOOR = env.int("BACKPRESSURE_TENANT_FLOOR", default=100)
# Requests larger than this are refused with 413 before any parsing (documented in the README).
MAX_REQUEST_BYTES = env.int("MAX_REQUEST_BYTES", default=64 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BYTES
TICKET_BODY_MAX_CHARS = env.int("TICKET_BODY_MAX_CHARS", default=20_000)
# Name lookups of tenants' URLs (project/netguard/addresses.py): /etc/hosts, then the servers of
# resolv.conf (or NETGUARD_DNS_SERVERS, "ip[:port]" each), each lookup by its deadline; at most
# NETGUARD_LOOKUPS_PER_TENANT of one client's in flight per process.
NETGUARD_LOOKUPS_PER_TENANT = env.int("NETGUARD_LOOKUPS_PER_TENANT", default=4)
NETGUARD_DNS_SERVERS: list[str] = env.list("NETGUARD_DNS_SERVERS", default=[])
NETGUARD_RESOLV_CONF = env.str("NETGUARD_RESOLV_CONF", default="/etc/resolv.conf")
NETGUARD_HOSTS_FILE = env.str("NETGUARD_HOSTS_FILE", default="/etc/hosts")
# Tenants' callbacks are never sent to loopback, private, link-local or metadata addresses
# (project/netguard/) except to these comma-separated `host[:port]` entries (a name or an address;
# no port: any port).
CALLBACK_ALLOWED_HOSTS: list[str] = env.list("CALLBACK_ALLOWED_HOSTS", default=[])
# The same for the operator's downstream webhooks (the intents' `webhook` tool), a level of trust
# of their own: a host opened here is never opened for a tenant's callback, nor the other way round.
DOWNSTREAM_ALLOWED_HOSTS: list[str] = env.list("DOWNSTREAM_ALLOWED_HOSTS", default=[])

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tickets.auth.ClientTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tickets.auth.IsClient"],
    "DEFAULT_THROTTLE_CLASSES": ["tickets.auth.ClientRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"client": env.str("CLIENT_THROTTLE_RATE", default="6000/min")},
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "tickets.api.errors.exception_handler",
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
    # OpenAPI 3.1 for its `webhooks`: the callbacks, one per event (tickets/api/schema.py).
    "OAS_VERSION": "3.1.0",
    "WEBHOOKS": [f"tickets.api.schema.{name}" for name in ("RESOLVED", "AWAITING_REVIEW", "DEAD_LETTERED")],
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "tickets.api.schema.postprocess"],
    "SWAGGER_UI_SETTINGS": {"persistAuthorization": True},
}

# --- The pipeline -----------------------------------------------------------------------------
PIPELINE = {
    # How many attempts a stage gets before its ticket is dead-lettered.
    "MAX_ATTEMPTS": env.int("PIPELINE_MAX_ATTEMPTS", default=5),
    # A stage task (a whole fused hop) running longer than this is stopped (Celery's soft limit, then
    # the hard one kills the process; the `cpu` worker's prefork pool enforces both): retried once,
    # then dead-lettered with the reason. A hop takes milliseconds; these bound a pathological one.
    "STAGE_SOFT_TIME_LIMIT_SECONDS": env.float("PIPELINE_STAGE_SOFT_TIME_LIMIT_SECONDS", default=10.0),
    "STAGE_TIME_LIMIT_SECONDS": env.float("PIPELINE_STAGE_TIME_LIMIT_SECONDS", default=15.0),
    # A ticket put off by the shared rate limit (not a failure, not an attempt) pays attempts again
    # once it is this old.
    "DEFER_MAX_SECONDS": env.int("PIPELINE_DEFER_MAX_SECONDS", default=3600),
    # Exponential backoff with full jitter: delay = uniform(0, min(cap, base * 2**attempt)).
    "BACKOFF_BASE_SECONDS": env.float("PIPELINE_BACKOFF_BASE_SECONDS", default=1.0),
    "BACKOFF_CAP_SECONDS": env.float("PIPELINE_BACKOFF_CAP_SECONDS", default=300.0),
    # Tickets sitting in a non-terminal state longer than this are re-enqueued by the sweeper.
    "STUCK_AFTER_SECONDS": env.int("PIPELINE_STUCK_AFTER_SECONDS", default=300),
    "WEBHOOK_TIMEOUT_SECONDS": env.float("WEBHOOK_TIMEOUT_SECONDS", default=10.0),
    # A refused callback is tried again after each of these in turn (±10 %), the last one repeating:
    # about three days in all, as Stripe does; then it is abandoned (counted, alerted, shown in the
    # admin, and can be resent). CALLBACK_MAX_ATTEMPTS (default: one more than the schedule) caps it.
    "CALLBACK_RETRY_SCHEDULE": env.list(
        "CALLBACK_RETRY_SCHEDULE", default=["30s", "2m", "10m", "30m", "1h", "2h", "4h", "8h", "12h", "24h", "24h"]
    ),
    "CALLBACK_MAX_ATTEMPTS": env.int("CALLBACK_MAX_ATTEMPTS", default=0),
    # One client's slow endpoint delays only that client: a drain takes at most this many of one
    # client's due callbacks, and its POSTs hold at most this many threads (never more than a quarter
    # of CALLBACK_CONCURRENCY; each POST has WEBHOOK_TIMEOUT_SECONDS over the whole request).
    "CALLBACK_PER_CLIENT": env.int("CALLBACK_PER_CLIENT", default=8),
    # A client's endpoint that failed this many attempts in a row is left alone (its callbacks wait,
    # not an attempt each) for CALLBACK_BREAKER_OPEN_SECONDS; then one callback goes as a probe, and
    # the rest follow once it is delivered (tickets/webhooks/breaker.py).
    "CALLBACK_BREAKER_FAILURES": env.int("CALLBACK_BREAKER_FAILURES", default=5),
    "CALLBACK_BREAKER_OPEN_SECONDS": env.float("CALLBACK_BREAKER_OPEN_SECONDS", default=30.0),
    # Callbacks go out in batches (tickets/webhooks/): a drain starts at most this long after a
    # ticket settles, claims up to CALLBACK_BATCH_SIZE due callbacks at a time and POSTs them on
    # CALLBACK_CONCURRENCY threads.
    "CALLBACK_BATCH_WINDOW_MS": env.int("CALLBACK_BATCH_WINDOW_MS", default=100),
    "CALLBACK_BATCH_SIZE": env.int("CALLBACK_BATCH_SIZE", default=64),
    "CALLBACK_CONCURRENCY": env.int("CALLBACK_CONCURRENCY", default=32),
    # Stages run one after another in one hop: '+' joins a group, ',' separates groups, "" is one hop
    # per stage; unset, every stage whose spec allows it (agents/pipeline/runner.py, docs/performance.md).
    "FUSE": env.str("PIPELINE_FUSE", default=None),
    # A new ticket's first hop goes to one of this many lanes of the first stage's queue, chosen by
    # its client; the cpu worker consumes the lanes in turn, so one client's flood waits in its own
    # lane instead of ahead of everyone's tickets (docs/reliability.md). 1: one queue for all.
    "LANES": env.int("PIPELINE_LANES", default=8),
    # How long a ticket waits before re-checking that its customer's older requests have settled.
    "CUSTOMER_WAIT_SECONDS": env.float("PIPELINE_CUSTOMER_WAIT_SECONDS", default=0.5),
    # ... the interval grows with the wait, up to this; past CUSTOMER_WAIT_MAX_SECONDS since the ticket
    # arrived it waits no more and goes to a person (an older request stuck must not hold it forever).
    "CUSTOMER_WAIT_MAX_INTERVAL_SECONDS": env.float("PIPELINE_CUSTOMER_WAIT_MAX_INTERVAL_SECONDS", default=5.0),
    "CUSTOMER_WAIT_MAX_SECONDS": env.float("PIPELINE_CUSTOMER_WAIT_MAX_SECONDS", default=600.0),
    # The customer's last N interactions given to decide (and shown to reviewers).
    "HISTORY_SIZE": env.int("HISTORY_SIZE", default=8),
    "HOLDING_REPLY": env.str(
        "HOLDING_REPLY",
        default="Thanks for getting in touch. A member of our team is looking at your request and will reply shortly.",
    ),
}
INTENT_PACK = env.str("INTENT_PACK", default=str(BASE_DIR / "agents" / "packs" / "banking77.yaml"))
CLASSIFIER_TIERS = [
    t
    for t in env.str(
        "CLASSIFIER_TIERS", default="agents.intents.rules.RulesTier,agents.intents.local.LocalModelTier"
    ).split(",")
    if t
]

ANTHROPIC_API_KEY = env.str("ANTHROPIC_API_KEY", default="")
ANTHROPIC_BASE_URL = env.str("ANTHROPIC_BASE_URL", default="")
# The network-bound tier runs on the `llm` queue only when an API key is configured.
LLM_ENABLED = bool(ANTHROPIC_API_KEY)
LLM_TIER = env.str("LLM_TIER", default="agents.intents.claude.ClaudeTier")

# --- The Claude tier (agents/llm; every key, its default and its meaning: agents/llm/config.py) -
# Prices (USD per million tokens) live only in agents.llm.config.DEFAULTS; override them here by class.
LLM = {
    "MODELS": {
        "small": {"id": env.str("LLM_SMALL_MODEL", default="claude-haiku-4-5")},
        "large": {"id": env.str("LLM_LARGE_MODEL", default="claude-sonnet-4-6")},
    },
    # The account's limits per model class, for all workers together (0 = unlimited).
    "LIMITS": {
        "small": {
            "rpm": env.int("LLM_SMALL_RPM", default=50),
            "itpm": env.int("LLM_SMALL_ITPM", default=50_000),
            "otpm": env.int("LLM_SMALL_OTPM", default=10_000),
        },
        "large": {
            "rpm": env.int("LLM_LARGE_RPM", default=50),
            "itpm": env.int("LLM_LARGE_ITPM", default=30_000),
            "otpm": env.int("LLM_LARGE_OTPM", default=8_000),
        },
    },
    "MAX_IN_FLIGHT": env.int("LLM_MAX_IN_FLIGHT", default=32),
    # Keep llm worker processes x threads <= rpm/60 x (this + typical latency); see docs/claude-tier.md.
    "MAX_WAIT_SECONDS": env.float("LLM_MAX_WAIT_SECONDS", default=40.0),
    "TIMEOUT_SECONDS": env.float("LLM_TIMEOUT_SECONDS", default=30.0),
    "CACHE_TTL_SECONDS": env.int("LLM_CACHE_TTL_SECONDS", default=86_400),
    # Per client and UTC day; unset: no budget. LLM_CLIENT_BUDGETS_USD="acme=5,42=20" (name or id).
    "DAILY_BUDGET_USD": env.float("LLM_DAILY_BUDGET_USD", default=0.0) or None,
    "CLIENT_BUDGETS_USD": {
        who.strip(): float(usd)
        for who, _, usd in (p.partition("=") for p in env.str("LLM_CLIENT_BUDGETS_USD", default="").split(",") if p)
    },
    "OVER_BUDGET": env.str("LLM_OVER_BUDGET", default="downgrade"),  # or "human"
    "DRAFT": {"history_size": PIPELINE["HISTORY_SIZE"]},
    # Low-priority tickets through the Message Batches API; max_wait below STUCK_AFTER_SECONDS.
    "BATCH": {
        "enabled": env.bool("LLM_BATCH_ENABLED", default=True),
        "size": env.int("LLM_BATCH_SIZE", default=100),
        "max_age_seconds": env.float("LLM_BATCH_MAX_AGE_SECONDS", default=60.0),
        "max_wait_seconds": env.float("LLM_BATCH_MAX_WAIT_SECONDS", default=240.0),
    },
}

# --- Observability (docs/observability.md) ---------------------------------------------------
OBSERVABILITY = {
    "LLM_BUDGET_USD_PER_DAY": env.float("LLM_BUDGET_USD_PER_DAY", default=100.0),
    "REVIEW_SLA_SECONDS": env.int("REVIEW_SLA_SECONDS", default=4 * 3600),
    "STATE_CACHE_SECONDS": env.float("METRICS_STATE_CACHE_SECONDS", default=10.0),
}


def _archive_storage_options() -> dict[str, Any]:
    """The local directory (the default), or the bucket when TRACE_ARCHIVE_STORAGE is the S3 one."""
    if env.str("TRACE_ARCHIVE_STORAGE", default="").endswith("S3ArchiveStorage"):
        return {
            "bucket": env.str("TRACE_ARCHIVE_S3_BUCKET", default=""),
            "prefix": env.str("TRACE_ARCHIVE_S3_PREFIX", default="traces"),
            "endpoint_url": env.str("TRACE_ARCHIVE_S3_ENDPOINT_URL", default=""),
            "region_name": env.str("TRACE_ARCHIVE_S3_REGION", default=""),
        }
    return {"location": env.str("TRACE_ARCHIVE_DIR", default=str(BASE_DIR / "var" / "archive" / "traces"))}


TRACE_RETENTION = {
    "ARCHIVE_AFTER_DAYS": env.float("TRACE_ARCHIVE_AFTER_DAYS", default=30.0),
    "BATCH_SIZE": env.int("TRACE_ARCHIVE_BATCH_SIZE", default=5000),
    "TIME_BUDGET_SECONDS": env.float("TRACE_ARCHIVE_TIME_BUDGET_SECONDS", default=45.0),
    "STORAGE": env.str("TRACE_ARCHIVE_STORAGE", default="agents.retention.LocalArchiveStorage"),
    "STORAGE_OPTIONS": _archive_storage_options(),
}
LOGGING = logging_config(
    level=env.str("LOG_LEVEL", default="INFO"), json_lines=env.str("LOG_FORMAT", default="json") != "plain"
)
