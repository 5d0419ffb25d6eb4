"""Bearer-token authentication of API clients, and per-client throttling."""

from __future__ import annotations

import logging
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from rest_framework import authentication, exceptions, permissions, throttling
from rest_framework.request import Request

from project.redisconn import redis_client
from tickets.models import Client, hash_token

_log = logging.getLogger(__name__)

_CLIENT_ATTNAMES = [f.attname for f in Client._meta.concrete_fields]
_CLIENT_COLUMNS = ", ".join(f'"{f.column}"' for f in Client._meta.concrete_fields)
_CLIENT_SQL = f'SELECT {_CLIENT_COLUMNS} FROM "{Client._meta.db_table}" WHERE "token_hash" = %s AND "is_active"'


def client_by_token(token: str) -> Client | None:
    """The active client holding `token`, read on every request (a revoked token stops at once).
    SQL written once: the ORM spent more CPU building this read than Postgres spends answering it."""
    with connection.cursor() as cursor:
        cursor.execute(_CLIENT_SQL, [hash_token(token)])
        row = cursor.fetchone()
    return None if row is None else Client.from_db(connection.alias, _CLIENT_ATTNAMES, row)


class ClientTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <token>`; the token is looked up by its SHA-256."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Client, str] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme != self.keyword or not token.strip():
            raise exceptions.AuthenticationFailed("use 'Authorization: Bearer <token>'")
        client = client_by_token(token.strip())
        if client is None:
            raise exceptions.AuthenticationFailed("invalid or inactive token")
        return client, token

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="api"'


class IsClient(permissions.BasePermission):
    """Only an authenticated API client."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, Client)


class ClientRateThrottle(throttling.SimpleRateThrottle):
    """Requests per client, shared by every API process: a sliding-window counter in Redis.

    DRF's own throttle keeps the timestamp of every request in the window as one cached list,
    read, unpickled, rewritten and stored again by each request: O(requests in the window), up to
    6,000 at the default rate. This keeps a counter per fixed window and weighs the previous
    window's by how much of it the sliding window still covers (one script call, O(1)). A refused
    request is not counted. Redis unreachable: the request is let through (the throttle guards
    fairness, not correctness; the API keeps accepting work while the broker is away) and logged.
    """

    scope = "client"
    _script: Any = None

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not isinstance(request.user, Client):
            return None
        return f"{settings.CACHES['default'].get('KEY_PREFIX', '')}:throttle:{self.scope}:{request.user.pk}"

    def allow_request(self, request: Request, view: Any) -> bool:
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        now = self.timer()
        window, into = divmod(now, self.duration)
        weight = 1 - into / self.duration  # the share of the previous window still inside
        if ClientRateThrottle._script is None:
            ClientRateThrottle._script = redis_client().register_script(_SLIDING_WINDOW)
        try:
            allowed, current, previous = ClientRateThrottle._script(
                keys=[f"{key}:{int(window)}", f"{key}:{int(window) - 1}"],
                args=[self.num_requests, repr(weight), 2 * self.duration],
            )
        except redis.RedisError as exc:
            _log.warning("throttle not applied: Redis unreachable (%s)", exc)
            return True
        if allowed:
            return True
        # Until the weighted count drops under the limit: the previous window fading out, or
        # this one ending (then it is the previous one).
        if current < self.num_requests and previous:
            self._wait = max(0.0, weight - (self.num_requests - current) / previous) * self.duration
        else:
            self._wait = (self.duration - into) + self.duration * max(0.0, 1 - self.num_requests / max(current, 1))
        return False

    def wait(self) -> float | None:
        return max(1.0, getattr(self, "_wait", self.duration))


_SLIDING_WINDOW = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
if current + previous * tonumber(ARGV[2]) >= tonumber(ARGV[1]) then
  return {0, current, previous}
end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, current + 1, previous}
"""
