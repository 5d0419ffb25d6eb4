"""The exact cache of classification answers: SHA-256 of (model, system prompt, normalised text).

Only classification labels are cached (an intent and a confidence: no customer data). Drafted
replies are never cached. Hits and misses are counted per UTC day.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from datetime import UTC, datetime
from typing import Any

import redis

from agents.llm.config import llm_settings
from agents.llm.store import key, redis_client


def normalise(text: str) -> str:
    """Case, Unicode form and whitespace do not change the question."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def cache_key(model: str, system: str, text: str, *, tenant: int | None) -> str:
    """The cache key for one question of one tenant to one model. Tenant-scoped: a hit (`cache_hit`
    in the trace) must never tell one client what another asked."""
    raw = json.dumps([tenant, model, system, normalise(text)], ensure_ascii=False).encode()
    return hashlib.sha256(raw).hexdigest()


def _day() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


class AnswerCache:
    """Classification answers in Redis with a TTL."""

    def __init__(self, client: redis.Redis | None = None) -> None:
        self._client = client

    @property
    def redis(self) -> redis.Redis:
        return self._client or redis_client()

    def get(self, digest: str) -> dict[str, Any] | None:
        """The cached answer, counting a hit or a miss."""
        raw = self.redis.get(key("cache", digest))
        stats = key("cache-stats", _day())
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(stats, "hits" if raw is not None else "misses", 1)
        pipe.expire(stats, 8 * 86_400)
        pipe.execute()
        return json.loads(raw) if raw is not None else None

    def put(self, digest: str, intent: str, confidence: float) -> None:
        ttl = int(llm_settings()["CACHE_TTL_SECONDS"])
        if ttl > 0:
            self.redis.set(key("cache", digest), json.dumps({"intent": intent, "confidence": confidence}), ex=ttl)

    def stats(self, day: str | None = None) -> dict[str, float]:
        """Hits, misses and the hit ratio for a UTC day (today by default)."""
        raw = self.redis.hgetall(key("cache-stats", day or _day()))
        hits, misses = int(raw.get(b"hits", 0)), int(raw.get(b"misses", 0))
        return {"hits": hits, "misses": misses, "ratio": hits / (hits + misses) if hits + misses else 0.0}
