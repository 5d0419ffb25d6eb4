"""The Claude tier's settings: `settings.LLM` merged over the defaults below.

Nothing else in `agents.llm` reads `settings.LLM` directly, so a test that overrides it (the
pytest-django `settings` fixture sends `setting_changed`) is seen at once by every worker thread.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

# Prices are USD per million tokens (check them against the provider's price list before trusting
# a cost report). "cache_write" is the 5-minute prompt-cache write; "batch_*" the Batches API price.
DEFAULTS: dict[str, Any] = {
    "MODELS": {
        "small": {
            "id": "claude-haiku-4-5",
            "input": 1.00,
            "output": 5.00,
            "cache_write": 1.25,
            "cache_read": 0.10,
            "batch_input": 0.50,
            "batch_output": 2.50,
        },
        "large": {
            "id": "claude-sonnet-4-6",
            "input": 3.00,
            "output": 15.00,
            "cache_write": 3.75,
            "cache_read": 0.30,
            "batch_input": 1.50,
            "batch_output": 7.50,
        },
    },
    # Per model class, for every worker on every host together; 0 means unlimited.
    "LIMITS": {
        "small": {"rpm": 50, "itpm": 50_000, "otpm": 10_000},
        "large": {"rpm": 50, "itpm": 30_000, "otpm": 8_000},
    },
    "HEADROOM": 0.97,  # the share of each limit the limiter hands out (the rest absorbs clock skew)
    "BURST_SECONDS": 1.0,  # bucket capacity, in seconds' worth of the limit
    "MAX_WAIT_SECONDS": 10.0,  # the longest a worker thread sleeps for the limiter before re-queueing
    "MAX_IN_FLIGHT": 32,  # calls to Claude in flight across all workers (0: no cap)
    "LEASE_SECONDS": 120.0,  # an in-flight slot a dead worker held is freed after this
    "TIMEOUT_SECONDS": 30.0,
    "SDK_MAX_RETRIES": 0,  # retries go through Celery, with backoff and jitter
    "UNAVAILABLE_SECONDS": 300.0,  # after a spend-limit 429, Claude is skipped (tickets go to people)
    "CLASSIFY": {"max_tokens": 200, "expected_output_tokens": 40},
    "DRAFT": {"max_tokens": 600, "expected_output_tokens": 200, "history_size": 8},
    "ROUTING": {
        "default": "small",
        "large": "large",
        "large_for_risk": ["high"],  # the intent's (or the cheap tiers' guess's) risk
        "large_over_chars": 2000,  # requests longer than this
        "large_below_prior_confidence": 0.0,  # the cheap tiers' best guess below this (0: off)
    },
    "CACHE_TTL_SECONDS": 86_400,  # exact cache of classification answers
    "DAILY_BUDGET_USD": None,  # per client and UTC day; None: no budget
    "CLIENT_BUDGETS_USD": {},  # client id or name → its own daily budget
    "OVER_BUDGET": "downgrade",  # "downgrade" (small model) or "human" (no Claude)
    "HARD_BUDGET_FACTOR": 2.0,  # over budget × this, "downgrade" also sends to people
    "BATCH": {
        "enabled": True,
        "max_priority": 0,  # tickets at or below this priority (0 = low) go through the Batches API
        "size": 100,  # submit when this many are waiting ...
        "max_age_seconds": 60.0,  # ... or when the oldest has waited this long
        "max_wait_seconds": 240.0,  # then call live: keep below PIPELINE["STUCK_AFTER_SECONDS"]
    },
    "KEY_PREFIX": "llm:",
}

_cache: dict[str, Any] = {}


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` over `base`, dictionaries merged key by key (a model's prices, a class's limits)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def llm_settings() -> dict[str, Any]:
    """The effective configuration (read-only by convention; computed once per settings change)."""
    if "value" not in _cache:
        _cache["value"] = merged(DEFAULTS, getattr(settings, "LLM", {}) or {})
    return _cache["value"]


def model_id(model_class: str) -> str:
    """The provider's model name for a model class."""
    return llm_settings()["MODELS"][model_class]["id"]


@receiver(setting_changed)
def _forget(setting: str, **kwargs: Any) -> None:
    if setting == "LLM":
        _cache.clear()
