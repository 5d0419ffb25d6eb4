"""The Redis the Claude tier shares between workers: one connection pool per process and URL."""

from __future__ import annotations

import threading

import redis
from django.conf import settings

from agents.llm.config import llm_settings

_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}


def redis_client() -> redis.Redis:
    """A client for `settings.REDIS_URL` (thread-safe; its pool is shared by the worker's threads)."""
    url = settings.REDIS_URL
    client = _clients.get(url)
    if client is None:
        with _lock:
            client = _clients.setdefault(
                url, redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)
            )
    return client


def key(*parts: object) -> str:
    """A key under the configured prefix: `key("cache", digest)` → `llm:cache:<digest>`."""
    return llm_settings()["KEY_PREFIX"] + ":".join(str(p) for p in parts)
