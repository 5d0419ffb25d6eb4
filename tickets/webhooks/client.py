"""The guarded HTTP clients for URLs a tenant or an intent decides (project/netguard does the guarding)."""

from __future__ import annotations

import threading

import httpx
from django.conf import settings

from project.netguard import guarded_client

_clients: dict[str, httpx.Client] = {}
_lock = threading.Lock()


def _client(allow_list: str) -> httpx.Client:
    client = _clients.get(allow_list)
    if client is None:
        with _lock:
            client = _clients.get(allow_list)
            if client is None:
                timeout = settings.PIPELINE["WEBHOOK_TIMEOUT_SECONDS"]
                client = _clients[allow_list] = guarded_client(timeout=timeout, allow_list=allow_list)
    return client


def http_client() -> httpx.Client:
    """One client per process (thread-safe) for the tenants' callbacks: it connects only to public
    addresses it checked itself (`CALLBACK_ALLOWED_HOSTS` opens others), never follows a redirect,
    and gives each request `WEBHOOK_TIMEOUT_SECONDS` from lookup to last byte, its answer cut at 64 KiB."""
    return _client("CALLBACK_ALLOWED_HOSTS")


def downstream_client() -> httpx.Client:
    """The same guard for the operator's downstream webhooks (`tool_webhook`), whose private hosts
    `DOWNSTREAM_ALLOWED_HOSTS` opens: a host opened for them is never opened for a tenant's callback."""
    return _client("DOWNSTREAM_ALLOWED_HOSTS")
