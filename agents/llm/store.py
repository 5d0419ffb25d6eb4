"""The Redis the Claude tier shares between workers (`project.redisconn`: one client per process and
URL), and its keys."""

from __future__ import annotations

from agents.llm.config import llm_settings
from project.redisconn import redis_client

__all__ = ["key", "redis_client"]


def key(*parts: object) -> str:
    """A key under the configured prefix: `key("cache", digest)` → `llm:cache:<digest>`."""
    return llm_settings()["KEY_PREFIX"] + ":".join(str(p) for p in parts)
