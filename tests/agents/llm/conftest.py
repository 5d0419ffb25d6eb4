"""Fixtures for the Claude tier: the Messages API simulator and a private Redis key prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agents.llm.config import merged
from agents.llm.store import redis_client
from agents.stages.types import IntentPolicy
from tooling.llm_simulator import start_simulator

HIGH_LIMITS = {"rpm": 60_000, "itpm": 100_000_000, "otpm": 100_000_000}


@pytest.fixture(scope="session")
def sim() -> Iterator[Any]:
    """One simulator for the session; `llm` resets it before each test."""
    handle = start_simulator(port=0, seed=1, batch_delay=0.2)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def llm(sim: Any, settings: Any) -> Iterator[Any]:
    """The tier pointed at the simulator, with generous limits and its own Redis keys; yields the simulator."""
    from agents.pipeline.context import parts

    sim.reset()
    prefix = f"llmtest:{uuid.uuid4().hex[:10]}:"
    settings.ANTHROPIC_API_KEY = "test"
    settings.ANTHROPIC_BASE_URL = sim.base_url
    settings.LLM_ENABLED = True
    settings.LLM = {
        "KEY_PREFIX": prefix,
        "LIMITS": {"small": HIGH_LIMITS, "large": HIGH_LIMITS},
        "BATCH": {"enabled": False},
    }
    parts.reset()
    yield sim
    parts.reset()
    r = redis_client()
    for name in r.scan_iter(match=prefix + "*", count=1000):
        r.delete(name)


@pytest.fixture
def catalog() -> dict[str, IntentPolicy]:
    """A small pack, as the stages see it."""
    return {
        "card_arrival": IntentPolicy("card_arrival", "The customer is waiting for a card that has not arrived."),
        "lost_or_stolen_card": IntentPolicy("lost_or_stolen_card", "The card was lost or stolen.", risk="high"),
        "exchange_rate": IntentPolicy("exchange_rate", "A question about currency exchange rates."),
        "terminate_account": IntentPolicy("terminate_account", "The customer wants to close the account."),
    }


@pytest.fixture
def configure(settings: Any) -> Callable[..., dict[str, Any]]:
    """`configure(LIMITS={...}, ...)`: merge changes into `settings.LLM` (read by the tier at each call)."""

    def change(**changes: Any) -> dict[str, Any]:
        settings.LLM = merged(settings.LLM, changes)
        return settings.LLM

    return change


@pytest.fixture
def posts(sim: Any) -> Callable[[], int]:
    """`posts()`: how many POST /v1/messages the simulator has answered since its reset."""
    return lambda: sum(sim.stats()["by_endpoint"].get("POST /v1/messages", {}).values())
