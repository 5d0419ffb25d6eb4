"""Fairness per tenant (docs/reliability.md, "One tenant cannot stall the others"), kept in Redis so
every API process and worker sees the same figures:

- **work in flight per tenant**: counted at accept (`admit`, or `enter` for a replay or a person's
  resume) and at settle (`leave`); a tenant may hold `max(TENANT_FLOOR, MAX_IN_FLIGHT / active
  tenants)` tickets in flight, so a flood is refused (429) at its own share and nobody else's;
- **a lane per active tenant**: the first tenant's ticket takes the least used lane of the first
  queue's pool (`parse.1`, … `parse.<PIPELINE_LANES-1>`; `parse` itself is for the hops published
  without a tenant), its last settled ticket frees it. The cheap
  worker consumes its lanes in turn (kombu's rotation over a worker's queues, prefetch 1), so each
  active tenant gets a turn; two share a lane only while more tenants are active than lanes.

A lost decrement (a worker killed between the commit and `leave`) cannot lock a tenant out: the
count is only a fast guess, and a refusal recounts from Postgres, the truth (at most once a second
per tenant), before it stands. Redis away: everyone is admitted, the lane falls back to `client % lanes`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import redis
from django.conf import settings

from project.redisconn import redis_client
from tickets.models import SETTLED_STATUSES, Ticket

log = logging.getLogger(__name__)

# KEYS: counts (hash client → tickets in flight), lanes (hash client → lane), the recount guard.
# ARGV: client, bound, floor, lanes, refuse (1: may refuse), count (1: add one), guard ms.
# Returns {admitted, lane, share, count, may recount}.
_ADMIT = """
local client = ARGV[1]
local n = tonumber(redis.call('HGET', KEYS[1], client) or '0')
local lane = redis.call('HGET', KEYS[2], client)
local active = redis.call('HLEN', KEYS[2])
if not lane then active = active + 1 end
local share = math.max(tonumber(ARGV[3]), math.floor(tonumber(ARGV[2]) / active))
if ARGV[5] == '1' and n >= share then
  local recount = redis.call('SET', KEYS[3], '1', 'PX', ARGV[7], 'NX') and 1 or 0
  return {0, tonumber(lane or '-1'), share, n, recount}
end
if not lane then
  local lanes, used = tonumber(ARGV[4]), {}
  for i = 0, lanes - 1 do used[i] = 0 end
  for _, l in ipairs(redis.call('HVALS', KEYS[2])) do
    local j = tonumber(l)
    if used[j] then used[j] = used[j] + 1 end
  end
  -- lane 0 (the queue itself) is kept for hops published without a tenant (a retry after a time
  -- limit, a hop after the Claude tier): with more than one lane, tenants get the others
  local first = lanes > 1 and 1 or 0
  lane = first
  for i = first + 1, lanes - 1 do if used[i] < used[lane] then lane = i end end
  redis.call('HSET', KEYS[2], client, lane)
end
if ARGV[6] == '1' then n = redis.call('HINCRBY', KEYS[1], client, 1) end
return {1, tonumber(lane), share, n, 0}
"""

# KEYS: counts, lanes. ARGV: client, count (the truth from Postgres; -1: one ticket settled).
_LEAVE = """
local client = ARGV[1]
local n = tonumber(ARGV[2])
if n < 0 then n = redis.call('HINCRBY', KEYS[1], client, -1) else redis.call('HSET', KEYS[1], client, n) end
if n <= 0 then
  redis.call('HDEL', KEYS[1], client)
  redis.call('HDEL', KEYS[2], client)
end
return n
"""

RECOUNT_EVERY_MS = 1000

_lock = threading.Lock()
_scripts: dict[int, tuple[object, object]] = {}
_recent = threading.local()  # (client, lane) of this thread's last admission: the request's enqueue


@dataclass(frozen=True)
class Admission:
    admitted: bool
    lane: int
    share: int = 0
    in_flight: int = 0


def _keys() -> list[str]:
    prefix = f"{settings.BROKER_KEY_PREFIX}tenants:"
    return [f"{prefix}in_flight", f"{prefix}lane"]


def _run(script: str, keys: list[str], args: list[object]) -> list[int] | int:
    client = redis_client()
    with _lock:
        pair = _scripts.get(id(client))
        if pair is None:
            pair = _scripts[id(client)] = (client.register_script(_ADMIT), client.register_script(_LEAVE))
    fn = pair[0] if script == "admit" else pair[1]
    return fn(keys=keys, args=args)  # type: ignore[operator]


def lanes() -> int:
    return max(1, settings.PIPELINE["LANES"])


def _admit(client_id: int, *, refuse: bool, count: bool) -> Admission:
    keys = [*_keys(), f"{settings.BROKER_KEY_PREFIX}tenants:recount:{client_id}"]
    args = [
        client_id,
        settings.BACKPRESSURE_MAX_IN_FLIGHT,
        settings.BACKPRESSURE_TENANT_FLOOR,
        lanes(),
        int(refuse),
        int(count),
        RECOUNT_EVERY_MS,
    ]
    admitted, lane, share, n, recount = _run("admit", keys, args)  # type: ignore[misc]
    if not admitted and recount:
        truth = in_flight_in_postgres(client_id)
        if truth < n:  # decrements were lost: the truth stands, and the tenant is asked again
            log.warning("tenant %s: %s in flight counted, %s in Postgres; recounted", client_id, n, truth)
            _run("leave", _keys(), [client_id, truth])
            admitted, lane, share, n, _ = _run("admit", keys, args)  # type: ignore[misc]
    return Admission(bool(admitted), lane if lane >= 0 else client_id % lanes(), share, n)


def admit(client_id: int) -> Admission:
    """One round trip: admit a new ticket of the client if it holds less than its share in flight
    (and count it), else refuse; either way the client's lane."""
    try:
        admission = _admit(client_id, refuse=True, count=True)
    except redis.RedisError:
        log.warning("tenant %s admitted unchecked: Redis unavailable", client_id, exc_info=True)
        admission = Admission(True, client_id % lanes())
    _recent.last = (client_id, admission.lane)
    return admission


def enter(client_id: int) -> None:
    """Count a ticket of the client that comes back in flight (a replay, a person's resume, a ticket
    made without the API): never refused."""
    try:
        _admit(client_id, refuse=False, count=True)
    except redis.RedisError:
        log.warning("tenant %s: a ticket in flight not counted: Redis unavailable", client_id, exc_info=True)


def leave(client_id: int) -> None:
    """A ticket of the client settled (or was not made after all): one less in flight; the last one
    frees its lane."""
    try:
        _run("leave", _keys(), [client_id, -1])
    except redis.RedisError:
        log.warning("tenant %s: a settled ticket not counted: Redis unavailable", client_id, exc_info=True)


def lane(client_id: int) -> int:
    """The client's lane: the one its admission in this thread just got (the API's request, no second
    round trip), else Redis's (assigned now if it has none: a sweep of a ticket whose count was lost)."""
    last = getattr(_recent, "last", None)
    if last is not None and last[0] == client_id:
        return last[1]
    try:
        return _admit(client_id, refuse=False, count=False).lane
    except redis.RedisError:
        return client_id % lanes()


def in_flight_in_postgres(client_id: int) -> int:
    """The client's tickets in flight, counted where they are kept."""
    return Ticket.objects.filter(client_id=client_id).exclude(status__in=SETTLED_STATUSES).count()


def state(client_id: int) -> dict[str, int | None]:
    """The client's count and lane as Redis holds them (None: not active) — for operators and tests."""
    counts, lanes_key = _keys()
    n, lane_ = redis_client().hget(counts, client_id), redis_client().hget(lanes_key, client_id)
    return {"in_flight": int(n) if n is not None else None, "lane": int(lane_) if lane_ is not None else None}


def reset() -> None:
    """Forget every count and lane (tests)."""
    _recent.last = None
    redis_client().delete(*_keys())
