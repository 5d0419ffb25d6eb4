"""Token buckets for requests / input tokens / output tokens per minute.

Like the real API, capacity is replenished continuously (limit/60 per second)
up to the per-minute limit, rather than reset at minute boundaries.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

UNLIMITED_REPORTED = 1_000_000_000  # what the headers report for an unlimited dimension


def rfc3339(ts: float) -> str:
    return _rfc3339_second(int(math.ceil(ts)))


@functools.lru_cache(maxsize=256)
def _rfc3339_second(sec: int) -> str:
    return datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TokenBucket:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.limit = int(per_minute or 0)
        self.rate = self.limit / 60.0
        self.level = float(self.limit)
        self.clock = clock
        self.stamp = clock()

    @property
    def unlimited(self) -> bool:
        return self.limit <= 0

    def _refill(self) -> None:
        now = self.clock()
        if not self.unlimited:
            self.level = min(float(self.limit), self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` can be taken (0 if it can be taken now)."""
        if self.unlimited:
            return 0.0
        self._refill()
        need = min(float(amount), float(self.limit))  # a request bigger than the limit waits for a full bucket
        if self.level >= need:
            return 0.0
        return (need - self.level) / self.rate

    def take(self, amount: float) -> None:
        if self.unlimited:
            return
        self._refill()
        self.level -= float(amount)

    def remaining(self) -> int:
        if self.unlimited:
            return UNLIMITED_REPORTED
        self._refill()
        return max(0, int(math.floor(self.level)))

    def seconds_to_full(self) -> float:
        if self.unlimited:
            return 0.0
        self._refill()
        return max(0.0, (self.limit - self.level) / self.rate)

    def reported_limit(self) -> int:
        return UNLIMITED_REPORTED if self.unlimited else self.limit


class RateLimiter:
    """The three buckets of one organization/model."""

    def __init__(self, rpm: int, itpm: int, otpm: int, clock: Callable[[], float] = time.monotonic):
        self.requests = TokenBucket(rpm, clock)
        self.input_tokens = TokenBucket(itpm, clock)
        self.output_tokens = TokenBucket(otpm, clock)

    def check(self, input_tokens: int) -> tuple[str, float] | None:
        """Admit a request that will use ``input_tokens`` (uncached) input tokens.

        Returns None and takes the capacity when admitted; otherwise
        (dimension, seconds_to_wait) and takes nothing. Output tokens are only
        checked for being exhausted here and charged with ``charge_output``
        when the answer is known (the API estimates, then corrects).
        """
        w = self.requests.wait_for(1)
        if w > 0:
            return "requests", w
        w = self.input_tokens.wait_for(input_tokens)
        if w > 0:
            return "input_tokens", w
        w = self.output_tokens.wait_for(1)
        if w > 0:
            return "output_tokens", w
        self.requests.take(1)
        self.input_tokens.take(input_tokens)
        return None

    def charge_output(self, output_tokens: int) -> None:
        self.output_tokens.take(output_tokens)

    def headers(self) -> dict[str, str]:
        now = time.time()
        h: dict[str, str] = {}
        for name, b in (
            ("requests", self.requests),
            ("input-tokens", self.input_tokens),
            ("output-tokens", self.output_tokens),
        ):
            h[f"anthropic-ratelimit-{name}-limit"] = str(b.reported_limit())
            h[f"anthropic-ratelimit-{name}-remaining"] = str(b.remaining())
            h[f"anthropic-ratelimit-{name}-reset"] = rfc3339(now + b.seconds_to_full())
        # Combined token headers: the most restrictive of input/output.
        tok = min((self.input_tokens, self.output_tokens), key=lambda b: (b.unlimited, b.remaining()))
        h["anthropic-ratelimit-tokens-limit"] = str(tok.reported_limit())
        h["anthropic-ratelimit-tokens-remaining"] = str(tok.remaining())
        h["anthropic-ratelimit-tokens-reset"] = rfc3339(now + tok.seconds_to_full())
        return h
