"""How long to wait before trying again: shared by stage retries and callback deliveries."""

from __future__ import annotations

import random

from django.conf import settings


def backoff_seconds(attempt: int, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter, capped; a provider's retry-after wins when longer."""
    cfg = settings.PIPELINE
    ceiling = min(cfg["BACKOFF_CAP_SECONDS"], cfg["BACKOFF_BASE_SECONDS"] * 2 ** (attempt - 1))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    return max(delay, retry_after or 0.0)
