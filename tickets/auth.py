"""API-key authentication of clients, and per-client throttling that tells its quota."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions, throttling
from rest_framework.request import Request

from project.redisconn import redis_client
from tickets.models import ApiKey, Client, hash_token

_log = logging.getLogger(__name__)

_C, _K = Client._meta, ApiKey._meta
_CLIENT_ATTNAMES = [f.attname for f in _C.concrete_fields]
_CLIENT_COLUMNS = ", ".join(f'c."{f.column}"' for f in _C.concrete_fields)
_KEY_SQL = (
    f'SELECT k."id", k."last_used_at", {_CLIENT_COLUMNS} FROM "{_K.db_table}" AS k '
    f'JOIN "{_C.db_table}" AS c ON c."id" = k."client_id" WHERE k."key_hash" = %s AND c."is_active" '
    'AND (k."revoked_at" IS NULL OR k."revoked_at" > %s) AND (k."expires_at" IS NULL OR k."expires_at" > %s)'
)
# Only if nobody wrote it since we read it: of several processes that saw the same stale time, one writes.
_TOUCH_SQL = (
    f'UPDATE "{_K.db_table}" SET "last_used_at" = %s WHERE "id" = %s AND "last_used_at" IS NOT DISTINCT FROM %s'
)
LAST_USED_EVERY = timedelta(minutes=1)
_touched: dict[int, datetime] = {}  # key id -> when this process last wrote its last_used_at


def client_by_key(key: str) -> tuple[Client, int] | None:
    """The active client holding the usable API key `key`, and the key's id: one indexed read per
    request (a revoked key stops at once). SQL written once: the ORM spent more CPU building this
    read than Postgres spends answering it."""
    with connection.cursor() as cursor:
        now = timezone.now()  # not SQL's now(), the start of a transaction that may be older
        cursor.execute(_KEY_SQL, [hash_token(key), now, now])
        row = cursor.fetchone()
    if row is None:
        return None
    key_id, last_used = row[0], row[1]
    _touch(key_id, last_used)
    return Client.from_db(connection.alias, _CLIENT_ATTNAMES, row[2:]), key_id


def _touch(key_id: int, last_used: datetime | None) -> None:
    """Record the key's use at most once a minute (per key, and per process): not a write per
    request on the hot path."""
    now = timezone.now()
    seen = max(filter(None, (last_used, _touched.get(key_id))), default=None)
    if seen is not None and now - seen < LAST_USED_EVERY:
        return
    _touched[key_id] = now
    with connection.cursor() as cursor:
        cursor.execute(_TOUCH_SQL, [now, key_id, last_used])


class ClientTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <API key>`; the key is looked up by its SHA-256."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Client, int] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme != self.keyword or not token.strip():
            raise exceptions.AuthenticationFailed("use 'Authorization: Bearer <API key>'")
        found = client_by_key(token.strip())
        if found is None:
            raise exceptions.AuthenticationFailed("invalid, expired or revoked API key")
        return found

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="api"'


class IsClient(permissions.BasePermission):
    """Only an authenticated API client."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, Client)


@dataclass(frozen=True)
class RateLimit:
    """A client's quota as the answer tells it (IETF draft-ietf-httpapi-ratelimit-headers)."""

    quota: int
    window: int
    remaining: int
    reset: float  # seconds until the quota has room again (allowed: until this window ends)

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Policy": f'"{ClientRateThrottle.scope}";q={self.quota};w={self.window}',
            "RateLimit": f'"{ClientRateThrottle.scope}";r={self.remaining};t={math.ceil(self.reset)}',
        }


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
        remaining = max(0, math.floor(self.num_requests - current - previous * weight))
        if allowed:
            request.ratelimit = RateLimit(self.num_requests, self.duration, remaining, self.duration - into)
            return True
        # Until the weighted count drops under the limit: the previous window fading out, or
        # this one ending (then it is the previous one).
        if current < self.num_requests and previous:
            self._wait = max(0.0, weight - (self.num_requests - current) / previous) * self.duration
        else:
            self._wait = (self.duration - into) + self.duration * max(0.0, 1 - self.num_requests / max(current, 1))
        request.ratelimit = RateLimit(self.num_requests, self.duration, 0, self.wait())
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
