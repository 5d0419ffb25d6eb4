"""Settings for the bench's processes once the Claude tier is on: the project's settings, with the
tier's shared limiter sized to the simulator's rate limit (`BENCH_LLM_RPM`) instead of the
conservative defaults, and live calls only (no Batches API), so the path measured is one call."""

from __future__ import annotations

import os

import project.settings as _base
from agents.llm.config import merged
from project.settings import *  # noqa: F403

_rpm = int(os.environ.get("BENCH_LLM_RPM", "600"))
_limits = {"rpm": _rpm, "itpm": 0, "otpm": 0}
LLM = merged(
    getattr(_base, "LLM", {}),
    {"LIMITS": {"small": _limits, "large": _limits}, "BATCH": {"enabled": False}, "KEY_PREFIX": "bench:llm:"},
)
