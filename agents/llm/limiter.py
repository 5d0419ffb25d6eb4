"""Claude's rate limits, shared by every worker on every host: token buckets in Redis, in Lua.

Per model class there are three buckets (requests, input tokens, output tokens per minute), a
provider-imposed pause, and a set of in-flight leases. `acquire` reserves an estimate atomically
and may book a slot up to `max_wait` seconds ahead (the bucket goes into debt, so callers queue in
arrival order instead of polling); `settle` refunds the estimate against the real usage, frees the
lease and recalibrates from the `anthropic-ratelimit-*` headers; `pause` records a 429's
retry-after for everyone. Time is Redis's own clock, so hosts need not agree on theirs.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from agents.llm.base import LimiterBusy, Usage
from agents.llm.config import llm_settings
from agents.llm.scope import current_scope
from agents.llm.store import key, redis_client

_PRELUDE = """
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
-- The configured limit, lowered (never raised) by what the provider's headers report.
local function effective(configured, reported)
  configured = tonumber(configured) or 0
  reported = tonumber(reported) or 0
  if configured <= 0 then return reported end
  if reported > 0 and reported < configured then return reported end
  return configured
end
-- Buckets refilled to `now`: {limit, rate per second, capacity, level} for requests, input, output.
local function load(now, limits, headroom, burst)
  local h = redis.call('HMGET', KEYS[1], 't', 'r', 'i', 'o', 'pause', 'hr', 'hi', 'ho')
  local t = tonumber(h[1])
  local dims = {}
  for d = 1, 3 do
    local limit = effective(limits[d], h[5 + d])
    local rate = limit * headroom / 60
    local cap = math.max(rate * burst, 1)
    local level = tonumber(h[1 + d])
    if level == nil or t == nil then
      level = cap
    else
      level = math.min(cap, level + math.max(0, now - t) * rate)
    end
    dims[d] = {limit = limit, rate = rate, cap = cap, level = level}
  end
  return dims, (tonumber(h[5]) or 0)
end
local function save(now, dims)
  redis.call('HSET', KEYS[1], 't', tostring(now), 'r', tostring(dims[1].level),
             'i', tostring(dims[2].level), 'o', tostring(dims[3].level))
  redis.call('EXPIRE', KEYS[1], 3600)
end
"""

# KEYS: buckets, in-flight leases (member `<tenant>:<id>`, score: when it lapses), tenants waiting.
# ARGV: rpm itpm otpm headroom burst | need_in need_out max_wait | inflight_cap lease_id lease_ttl | tenant
_ACQUIRE = (
    _PRELUDE
    + """
local now = clock()
local dims, pause = load(now, {ARGV[1], ARGV[2], ARGV[3]}, tonumber(ARGV[4]), tonumber(ARGV[5]))
local tenant = ARGV[12]
local function refuse(wait, why)
  if tenant ~= '' then  -- it wants room: others past their share give way while it waits
    redis.call('ZADD', KEYS[3], now + math.max(2, tonumber(wait) or 0), tenant)
    redis.call('EXPIRE', KEYS[3], 3600)
  end
  return {0, tostring(wait), why}
end
if pause > now then return refuse(pause - now, 'paused') end
local cap = tonumber(ARGV[9])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local held = redis.call('ZCARD', KEYS[2])
if cap > 0 and held >= cap then return refuse(0, 'in_flight') end
if tenant ~= '' then
  -- A tenant's share of the limit while others wait: cap (or what is held now) / tenants wanting it.
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  local wanting, mine, others = {}, 0, 0
  for _, t in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
    if t ~= tenant then wanting[t] = true; others = others + 1 end
  end
  if others > 0 then
    for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
      local t = string.match(m, '^(.*):[^:]*$') or ''
      if t == tenant then mine = mine + 1
      elseif t ~= '' and not wanting[t] then wanting[t] = true; others = others + 1 end
    end
    local total = cap > 0 and cap or (held + 1)
    if mine >= math.max(1, math.floor(total / (others + 1))) then return refuse(0, 'share') end
  end
end
local need = {1, tonumber(ARGV[6]), tonumber(ARGV[7])}
local wait = 0
for d = 1, 3 do
  local x = dims[d]
  if x.limit > 0 then
    local n = math.min(need[d], x.cap)  -- a request bigger than the bucket waits for a full one
    if x.level < n then wait = math.max(wait, (n - x.level) / x.rate) end
  end
end
if wait > tonumber(ARGV[8]) then return refuse(wait, 'limit') end
for d = 1, 3 do
  if dims[d].limit > 0 then dims[d].level = dims[d].level - need[d] end
end
save(now, dims)
redis.call('ZADD', KEYS[2], now + wait + tonumber(ARGV[11]), ARGV[10])
redis.call('EXPIRE', KEYS[2], 3600)
if tenant ~= '' then redis.call('ZREM', KEYS[3], tenant) end
return {1, tostring(wait), 'ok'}
"""
)

# ARGV: rpm itpm otpm headroom burst | lease_id est_in est_out used_in used_out |
#       reported limit/remaining for requests, input, output (-1: absent)
_SETTLE = (
    _PRELUDE
    + """
local now = clock()
redis.call('ZREM', KEYS[2], ARGV[6])
local fields = {'hr', 'hi', 'ho'}
for d = 1, 3 do
  local reported = tonumber(ARGV[10 + 2 * d - 1])
  if reported >= 0 then redis.call('HSET', KEYS[1], fields[d], tostring(reported)) end
end
local dims = load(now, {ARGV[1], ARGV[2], ARGV[3]}, tonumber(ARGV[4]), tonumber(ARGV[5]))
dims[2].level = math.min(dims[2].cap, dims[2].level + tonumber(ARGV[7]) - tonumber(ARGV[9]))
dims[3].level = math.min(dims[3].cap, dims[3].level + tonumber(ARGV[8]) - tonumber(ARGV[10]))
for d = 1, 3 do
  local remaining = tonumber(ARGV[10 + 2 * d])
  if remaining >= 0 and dims[d].limit > 0 then dims[d].level = math.min(dims[d].level, remaining) end
end
save(now, dims)
return 1
"""
)

# ARGV: rpm itpm otpm headroom burst | seconds
_PAUSE = (
    _PRELUDE
    + """
local now = clock()
local dims, pause = load(now, {ARGV[1], ARGV[2], ARGV[3]}, tonumber(ARGV[4]), tonumber(ARGV[5]))
local resume = math.max(pause, now + tonumber(ARGV[6]))
for d = 1, 3 do dims[d].level = math.min(dims[d].level, 0) end  -- the provider saw us over: start empty
save(now, dims)
redis.call('HSET', KEYS[1], 'pause', tostring(resume))
return tostring(resume - now)
"""
)

HEADER_DIMS = ("requests", "input-tokens", "output-tokens")


@dataclass(frozen=True)
class Lease:
    """A granted reservation: what was reserved, to be settled once the call is over."""

    model_class: str
    lease_id: str
    input_tokens: int
    output_tokens: int
    waited: float = 0.0


def reported_limits(headers: Mapping[str, str] | None) -> list[int]:
    """`[limit, remaining] * 3` from the `anthropic-ratelimit-*` headers; -1 where absent or unreadable."""
    out: list[int] = []
    for dim in HEADER_DIMS:
        for what in ("limit", "remaining"):
            raw = (headers or {}).get(f"anthropic-ratelimit-{dim}-{what}")
            try:
                out.append(max(0, int(raw)) if raw is not None else -1)
            except ValueError:
                out.append(-1)
    return out


class RateLimiter:
    """The shared limiter. Cheap to build; all state is in Redis."""

    def __init__(self, client: redis.Redis | None = None, *, sleep: Callable[[float], None] = time.sleep):
        self.redis = client or redis_client()
        self.sleep = sleep
        self._acquire = self.redis.register_script(_ACQUIRE)
        self._settle = self.redis.register_script(_SETTLE)
        self._pause = self.redis.register_script(_PAUSE)

    def _keys(self, model_class: str) -> list[str]:
        return [key("limit", model_class), key("limit", model_class, "inflight"), key("limit", model_class, "waiting")]

    def _limits(self, model_class: str) -> list[Any]:
        cfg = llm_settings()
        lim = cfg["LIMITS"].get(model_class, {})
        return [lim.get("rpm", 0), lim.get("itpm", 0), lim.get("otpm", 0), cfg["HEADROOM"], cfg["BURST_SECONDS"]]

    def acquire(
        self,
        model_class: str,
        *,
        input_tokens: int,
        output_tokens: int,
        max_wait: float | None = None,
        tenant: int | str | None = None,
    ) -> Lease:
        """Reserve one request and the token estimates, sleeping at most `max_wait` for room.

        `tenant` (default: the client of the ticket in scope) gets its share: while another tenant
        waits for room, one holding `MAX_IN_FLIGHT / tenants wanting room` leases (or that share of
        the leases held, with no cap) waits too, so the next free slot goes to the other.

        Raises `LimiterBusy(retry_after=...)` when there is no room within the wait (nothing taken).
        """
        cfg = llm_settings()
        budget = cfg["MAX_WAIT_SECONDS"] if max_wait is None else max_wait
        deadline = time.monotonic() + budget
        if tenant is None:
            tenant = current_scope().client_id
        tenant = "" if tenant is None else str(tenant).replace(":", "_")
        lease_id = f"{tenant}:{uuid.uuid4().hex}"
        args = [*self._limits(model_class), int(input_tokens), int(output_tokens)]
        tail = [int(cfg["MAX_IN_FLIGHT"]), lease_id, float(cfg["LEASE_SECONDS"]), tenant]
        started = time.monotonic()
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            granted, wait, why = self._acquire(keys=self._keys(model_class), args=[*args, remaining, *tail])
            wait = float(wait)
            if granted:
                if wait > 0:
                    self.sleep(wait)  # our booked slot; everyone behind us booked a later one
                return Lease(model_class, lease_id, int(input_tokens), int(output_tokens), time.monotonic() - started)
            why = why.decode() if isinstance(why, bytes) else str(why)
            if why in ("in_flight", "share"):
                wait = random.uniform(0.05, 0.2)  # a slot frees when some call ends: poll, spread out
            if wait >= remaining:
                raise LimiterBusy(
                    f"rate limiter: {why} for {model_class}, next room in {wait:.1f}s", retry_after=max(wait, 0.1)
                )
            self.sleep(wait + random.uniform(0, 0.05))

    def settle(self, lease: Lease, *, used: Usage | None = None, headers: Mapping[str, str] | None = None) -> None:
        """Free the lease; refund the estimate against `used` (None: nothing was used); recalibrate."""
        used_in = used.limited_input if used else 0
        used_out = used.output_tokens if used else 0
        args = [
            *self._limits(lease.model_class),
            lease.lease_id,
            lease.input_tokens,
            lease.output_tokens,
            used_in,
            used_out,
            *reported_limits(headers),
        ]
        self._settle(keys=self._keys(lease.model_class), args=args)

    def pause(self, model_class: str, seconds: float) -> float:
        """Stop every worker calling this model class for `seconds` (a 429's retry-after)."""
        left = self._pause(keys=self._keys(model_class), args=[*self._limits(model_class), float(seconds)])
        return float(left)

    def state(self, model_class: str) -> dict[str, float]:
        """The raw bucket state (for tests and operators)."""
        raw = self.redis.hgetall(self._keys(model_class)[0])
        out = {k.decode(): float(v) for k, v in raw.items()}
        out["in_flight"] = float(self.redis.zcard(self._keys(model_class)[1]))
        return out
