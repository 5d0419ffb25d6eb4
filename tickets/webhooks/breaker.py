"""A circuit breaker per client, shared by every worker through Redis.

Closed while the client's endpoint answers. After `CALLBACK_BREAKER_FAILURES` failed attempts in a
row it opens: the client's due callbacks wait (in Postgres, not an attempt each) for
`CALLBACK_BREAKER_OPEN_SECONDS`. Then it is half-open: one callback goes as the probe while the
others wait; a delivered probe closes it, a failed one opens it again. So an endpoint that never
answers costs one POST per open period, not the callback threads and drains of every tenant, and
one that comes back is told within a period. (A fixed period, not a growing one: a probe is one
POST, and a longer wait would only delay the callbacks of an endpoint that is back.)
Redis away: every client counts as closed (the per-client slots still bound it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.conf import settings

from project.redisconn import redis_client
from tickets.webhooks.schedule import cfg

_log = logging.getLogger(__name__)
_DAY_MS = 86_400_000


def _fail_key(client: int) -> str:
    return f"{settings.BROKER_KEY_PREFIX}callbacks:failures:{client}"


def _hold_key(client: int) -> str:
    return f"{settings.BROKER_KEY_PREFIX}callbacks:hold:{client}"


def threshold() -> int:
    return max(1, int(cfg("CALLBACK_BREAKER_FAILURES")))


def tripped(clients: Iterable[int]) -> set[int]:
    """The clients whose breaker is open or half-open (one round trip)."""
    clients = list(clients)
    if not clients:
        return set()
    try:
        counts = redis_client().mget([_fail_key(c) for c in clients])
    except Exception as exc:
        _log.warning("callback breakers unread (treated as closed): %s", exc)
        return set()
    return {c for c, n in zip(clients, counts, strict=True) if n is not None and int(n) >= threshold()}


def admit(client: int, *, probe_seconds: float) -> float:
    """For a tripped client: 0 when this callback is the half-open probe (it holds the probe for
    `probe_seconds`), else how many seconds its callbacks wait."""
    hold = _hold_key(client)
    try:
        r = redis_client()
        if r.set(hold, b"probe", nx=True, px=int(probe_seconds * 1000)):
            return 0.0
        left = r.pttl(hold)
    except Exception as exc:
        _log.warning("callback breaker unread (treated as closed): %s", exc)
        return 0.0
    return max(left, 1000) / 1000 if left and left > 0 else probe_seconds


def record(*, delivered: Iterable[int], failed: Iterable[int]) -> dict[int, float]:
    """Count the outcomes of a batch (one round trip); the clients whose breaker opened, with how
    long it stays open."""
    delivered, failed = set(delivered), list(failed)
    if not delivered and not failed:
        return {}
    try:
        pipe = redis_client().pipeline(transaction=False)
        for client in delivered:
            pipe.delete(_fail_key(client), _hold_key(client))
        for client in failed:
            pipe.incr(_fail_key(client))
            pipe.pexpire(_fail_key(client), _DAY_MS)
        results = pipe.execute()
    except Exception as exc:
        _log.warning("callback breakers not counted: %s", exc)
        return {}
    counts = {client: int(n) for client, n in zip(failed, results[len(delivered) :: 2], strict=True)}
    opened = {}
    for client, n in counts.items():
        if n >= threshold():
            opened[client] = _open(client, n)
    return opened


def _open(client: int, failures: int) -> float:
    """Open (or open again after a failed probe); an open breaker is not extended by the failures
    of POSTs that were already in flight when it opened."""
    seconds = float(cfg("CALLBACK_BREAKER_OPEN_SECONDS"))
    try:
        r = redis_client()
        if r.get(_hold_key(client)) == b"open":
            left = r.pttl(_hold_key(client))
            return max(left, 0) / 1000 if left and left > 0 else seconds
        r.set(_hold_key(client), b"open", px=int(seconds * 1000))
    except Exception as exc:
        _log.warning("callback breaker not opened: %s", exc)
    return seconds
