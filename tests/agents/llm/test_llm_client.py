"""The anthropic client through the real SDK over HTTP against the simulator: errors, limits, caching, cost."""

from __future__ import annotations

import anthropic
import pytest

from agents.llm.anthropic_client import AnthropicClient
from agents.llm.base import LimiterBusy, ModelError, ModelRequest, ModelUnavailable, Usage
from agents.llm.limiter import RateLimiter
from agents.llm.pricing import cost_usd

CATALOGUE = "You classify requests for a bank. Intents: card_arrival, lost_or_stolen_card, exchange_rate. " * 60


def ask(text: str, **overrides) -> ModelRequest:
    fields = {
        "model_class": "small",
        "model": "claude-haiku-4-5",
        "system": CATALOGUE,
        "cache_system": True,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 100,
        "expected_output_tokens": 20,
        "json_schema": {
            "type": "object",
            "properties": {
                "intent": {"type": "string", "enum": ["card_arrival", "exchange_rate"]},
                "confidence": {"type": "number"},
            },
            "required": ["intent", "confidence"],
            "additionalProperties": False,
        },
    }
    return ModelRequest(**{**fields, **overrides})


@pytest.fixture
def client(llm):
    return AnthropicClient()


def test_a_structured_answer_comes_back_verbatim_and_the_catalogue_is_prompt_cached(client, llm):
    first = client.complete(ask("my card has not arrived"))
    second = client.complete(ask("what is the exchange rate today"))

    assert first.stop_reason == "end_turn" and first.text.startswith("{") and first.model == "claude-haiku-4-5"
    assert first.usage.cache_write_tokens > 1000 and first.usage.cache_read_tokens == 0
    assert second.usage.cache_read_tokens == first.usage.cache_write_tokens and second.usage.cache_write_tokens == 0
    assert cost_usd("small", second.usage) < cost_usd("small", first.usage) / 3


def test_cost_counts_input_output_cache_writes_and_reads_and_the_batch_price(settings):
    usage = Usage(
        input_tokens=1_000_000, output_tokens=1_000_000, cache_write_tokens=1_000_000, cache_read_tokens=1_000_000
    )
    # claude-haiku-4-5 at the defaults: 1 + 5 + 1.25 + 0.10 per million; the batch price is half of it.
    assert cost_usd("small", usage) == pytest.approx(7.35)
    assert cost_usd("small", usage, batch=True) == pytest.approx(7.35 / 2)


@pytest.mark.parametrize("fault", ["529", "500", "503", "disconnect", "malformed", "timeout"])
def test_a_transient_failure_is_one_call_no_sdk_retry_and_a_retryable_error(client, llm, posts, configure, fault):
    configure(TIMEOUT_SECONDS=0.5)
    llm.configure(fault_script=[fault], hang_seconds=1)

    with pytest.raises(ModelError) as failed:
        AnthropicClient().complete(ask("my card has not arrived"))

    assert not failed.value.permanent
    assert posts() == 1  # the SDK's own retries are off: Celery retries, with backoff and jitter
    assert RateLimiter().state("small")["in_flight"] == 0  # the slot was given back


def test_a_429_pauses_every_worker_until_its_retry_after(client, llm, posts):
    llm.configure(rpm=1)
    raw = anthropic.Anthropic(api_key="test", base_url=llm.base_url, max_retries=0)
    raw.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])

    with pytest.raises(ModelError) as limited:
        client.complete(ask("my card has not arrived"))

    assert not limited.value.permanent and limited.value.retry_after >= 30
    assert RateLimiter().state("small")["pause"] > 0
    with pytest.raises(LimiterBusy):  # another worker does not even try
        AnthropicClient().complete(ask("where is my card"))
    assert posts() == 2


def test_the_ratelimit_headers_recalibrate_the_shared_limiter(client, llm):
    llm.configure(rpm=120, itpm=50_000)

    client.complete(ask("my card has not arrived"))

    state = RateLimiter().state("small")
    assert state["hr"] == 120 and state["hi"] == 50_000  # below what settings allowed (60,000 and 10^8)


def test_a_spend_limit_makes_claude_unavailable_to_every_worker(client, llm, posts):
    llm.configure(spend_limit_after=0)

    with pytest.raises(ModelUnavailable):
        client.complete(ask("my card has not arrived"))

    assert not AnthropicClient().available()
    assert posts() == 1


def test_a_request_the_api_rejects_is_a_permanent_error(client, llm):
    with pytest.raises(ModelError) as rejected:
        client.complete(ask("hello", messages=[{"role": "system", "content": "not a role"}]))

    assert rejected.value.permanent and "400" in str(rejected.value)
