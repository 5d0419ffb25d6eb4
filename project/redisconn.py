"""One Redis client per process and URL, shared by its threads (a client takes a connection from
its pool per command, so it is thread-safe; the pool reconnects after a fork)."""

from __future__ import annotations

import threading

import redis
from django.conf import settings

_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}


def redis_client() -> redis.Redis:
    """A client for `settings.REDIS_URL`."""
    url = settings.REDIS_URL
    client = _clients.get(url)
    if client is None:
        with _lock:
            client = _clients.setdefault(
                url, redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)
            )
    return client
