"""The Messages API simulator, exercised only through the real `anthropic` SDK over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Literal

import anthropic
import jsonschema
import pydantic
import pytest

from tooling.llm_simulator import SimulatorConfig, parse_latency, simulate_reply, start_simulator

REPO = Path(__file__).resolve().parents[3]
MODEL = "claude-sonnet-4-6"

INTENTS = ["card_arrival", "lost_or_stolen_card", "refund_not_showing_up", "exchange_rate", "pin_blocked"]
CLASSIFY_SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"type": "string", "enum": INTENTS},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "rationale": {"type": "string"},
    },
    "required": ["intent", "confidence", "rationale"],
    "additionalProperties": False,
}
OUTPUT_CONFIG = {"format": {"type": "json_schema", "schema": CLASSIFY_SCHEMA}}
LONG_SYSTEM = "You are a careful support-ticket classifier for a retail bank. " * 120  # ~7,700 chars


@pytest.fixture(scope="module")
def sim() -> Iterator:
    handle = start_simulator(port=0, seed=1, batch_delay=0.2)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(autouse=True)
def _fresh(sim) -> None:
    sim.reset()


@pytest.fixture
def client(sim) -> Iterator[anthropic.Anthropic]:
    c = anthropic.Anthropic(api_key="test", base_url=sim.base_url, max_retries=0)
    try:
        yield c
    finally:
        c.close()


def ask(client: anthropic.Anthropic, text: str, **kw):
    kw.setdefault("max_tokens", 256)
    return client.messages.create(model=MODEL, messages=[{"role": "user", "content": text}], **kw)


# --------------------------------------------------------------------------- answers


def test_structured_classification_is_valid_json_with_enum_intent(client) -> None:
    msg = ask(
        client, "Hi, I ordered a new card two weeks ago and it still has not arrived.", output_config=OUTPUT_CONFIG
    )
    assert msg.type == "message" and msg.role == "assistant" and msg.model == MODEL
    assert msg.stop_reason == "end_turn"
    data = json.loads(msg.content[0].text)
    jsonschema.validate(data, CLASSIFY_SCHEMA)
    assert data["intent"] == "card_arrival"  # keyword overlap: card + arrived~arrival
    assert 0.7 <= data["confidence"] <= 1.0


def test_marker_steers_intent_and_confidence(client) -> None:
    msg = ask(client, "Where is my money? [[intent:pin_blocked]] [[confidence:0.37]]", output_config=OUTPUT_CONFIG)
    data = json.loads(msg.content[0].text)
    jsonschema.validate(data, CLASSIFY_SCHEMA)
    assert data["intent"] == "pin_blocked"
    assert data["confidence"] == pytest.approx(0.37)


def test_answers_are_deterministic_and_predictable(client) -> None:
    text = "Something completely unrelated to any label whatsoever"
    a = ask(client, text, output_config=OUTPUT_CONFIG)
    b = ask(client, text, output_config=OUTPUT_CONFIG)
    assert a.content[0].text == b.content[0].text
    assert a.id != b.id
    predicted = simulate_reply(
        {
            "model": MODEL,
            "max_tokens": 256,
            "output_config": OUTPUT_CONFIG,
            "messages": [{"role": "user", "content": text}],
        }
    )
    assert predicted.text == a.content[0].text
    assert json.loads(a.content[0].text)["intent"] in INTENTS
    free = ask(client, "hello there")
    assert free.content[0].type == "text" and free.content[0].text
    assert free.content[0].text == ask(client, "hello there").content[0].text


def test_sdk_parse_with_pydantic_model(client) -> None:
    class Intent(StrEnum):
        card_arrival = "card_arrival"
        exchange_rate = "exchange_rate"

    class Classification(pydantic.BaseModel):
        intent: Intent
        confidence: float
        needs_human: bool
        tags: list[str]
        channel: Literal["email", "chat"]

    msg = client.messages.parse(
        model=MODEL,
        max_tokens=256,
        output_format=Classification,
        messages=[{"role": "user", "content": "What exchange rate do you use? [[needs_human:true]]"}],
    )
    parsed = msg.content[0].parsed_output
    assert isinstance(parsed, Classification)
    assert parsed.intent is Intent.exchange_rate and parsed.needs_human is True


def test_tool_choice_returns_tool_use(client) -> None:
    tool = {
        "name": "route_ticket",
        "description": "route",
        "input_schema": {
            "type": "object",
            "properties": {
                "intent": {"type": "string", "enum": INTENTS},
                "priority": {"type": "integer", "minimum": 1, "maximum": 3},
            },
            "required": ["intent", "priority"],
        },
    }
    msg = ask(
        client, "I lost my card, someone stole it", tools=[tool], tool_choice={"type": "tool", "name": "route_ticket"}
    )
    assert msg.stop_reason == "tool_use"
    block = msg.content[0]
    assert block.type == "tool_use" and block.name == "route_ticket"
    assert block.input["intent"] == "lost_or_stolen_card" and 1 <= block.input["priority"] <= 3


def test_streaming_matches_non_streaming(client) -> None:
    with client.messages.stream(
        model=MODEL, max_tokens=256, messages=[{"role": "user", "content": "stream please"}]
    ) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == ask(client, "stream please").content[0].text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


# --------------------------------------------------------------------------- usage and caching


def test_usage_and_prompt_cache(client) -> None:
    system = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}]
    first = ask(client, "card not arrived", system=system, output_config=OUTPUT_CONFIG)
    second = ask(client, "my pin is blocked", system=system, output_config=OUTPUT_CONFIG)
    u1, u2 = first.usage, second.usage
    assert u1.output_tokens > 0 and u1.input_tokens > 0
    assert u1.cache_creation_input_tokens >= len(LONG_SYSTEM) // 4 and u1.cache_read_input_tokens == 0
    assert u1.cache_creation.ephemeral_5m_input_tokens == u1.cache_creation_input_tokens
    assert u2.cache_read_input_tokens == u1.cache_creation_input_tokens and u2.cache_creation_input_tokens == 0
    assert u2.input_tokens < 250  # only the uncached suffix and the schema
    # Same prompt without cache_control: nothing cached or read.
    plain = ask(client, "card not arrived", system=LONG_SYSTEM, output_config=OUTPUT_CONFIG)
    assert plain.usage.cache_creation_input_tokens == 0 and plain.usage.cache_read_input_tokens == 0
    total1 = u1.input_tokens + u1.cache_creation_input_tokens + u1.cache_read_input_tokens
    assert plain.usage.input_tokens == total1
    # A prefix shorter than the minimum cacheable length is not cached.
    short = ask(client, "x", system=[{"type": "text", "text": "short", "cache_control": {"type": "ephemeral"}}])
    assert short.usage.cache_creation_input_tokens == 0


def test_count_tokens_matches_create_usage(client) -> None:
    kwargs = dict(system=LONG_SYSTEM, messages=[{"role": "user", "content": "How do I top up?"}])
    counted = client.messages.count_tokens(model=MODEL, **kwargs)
    assert counted.input_tokens > len(LONG_SYSTEM) // 4
    created = client.messages.create(model=MODEL, max_tokens=64, **kwargs)
    assert created.usage.input_tokens == counted.input_tokens


def test_max_tokens_cuts_the_answer(client) -> None:
    msg = ask(client, "please answer at length [[words:200]]", max_tokens=10)
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 10
    assert len(msg.content[0].text) <= 40


# --------------------------------------------------------------------------- batches


def test_batch_round_trip(client) -> None:
    requests = [
        {
            "custom_id": f"t-{i}",
            "params": {
                "model": MODEL,
                "max_tokens": 128,
                "output_config": OUTPUT_CONFIG,
                "messages": [{"role": "user", "content": f"ticket {i} [[intent:{intent}]]"}],
            },
        }
        for i, intent in enumerate(INTENTS)
    ]
    requests.append({"custom_id": "bad", "params": {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}})
    batch = client.messages.batches.create(requests=requests)
    assert batch.processing_status == "in_progress" and batch.request_counts.processing == len(requests)
    assert batch.results_url is None
    deadline = time.monotonic() + 10
    while (batch := client.messages.batches.retrieve(batch.id)).processing_status != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert batch.request_counts.succeeded == len(INTENTS) and batch.request_counts.errored == 1
    assert batch.ended_at is not None and batch.results_url
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert set(results) == {r["custom_id"] for r in requests}
    for i, intent in enumerate(INTENTS):
        res = results[f"t-{i}"]
        assert res.type == "succeeded"
        assert json.loads(res.message.content[0].text)["intent"] == intent
        assert res.message.usage.service_tier == "batch"
    assert results["bad"].type == "errored"
    assert results["bad"].error.error.type == "invalid_request_error"
    listed = [b.id for b in client.messages.batches.list(limit=10)]
    assert batch.id in listed


def test_batch_cancel(client) -> None:
    client_cfg = {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "x"}]}
    batch = client.messages.batches.create(requests=[{"custom_id": "a", "params": client_cfg}])
    canceled = client.messages.batches.cancel(batch.id)
    assert canceled.processing_status in ("canceling", "ended") and canceled.cancel_initiated_at is not None
    deadline = time.monotonic() + 10
    while (batch := client.messages.batches.retrieve(batch.id)).processing_status != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert batch.request_counts.canceled == 1
    assert [r.result.type for r in client.messages.batches.results(batch.id)] == ["canceled"]


# --------------------------------------------------------------------------- rate limits and errors


def test_rate_limit_429_with_headers(sim, client) -> None:
    sim.configure(rpm=3)
    for i in range(3):
        raw = client.messages.with_raw_response.create(
            model=MODEL, max_tokens=32, messages=[{"role": "user", "content": f"q{i}"}]
        )
        assert raw.headers["anthropic-ratelimit-requests-limit"] == "3"
        assert raw.headers["request-id"].startswith("req_")
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "0"
    with pytest.raises(anthropic.RateLimitError) as err:
        ask(client, "fourth")
    e = err.value
    assert e.status_code == 429 and e.type == "rate_limit_error"
    h = e.response.headers
    assert int(h["retry-after"]) >= 1
    for dim in ("requests", "input-tokens", "output-tokens"):
        for part in ("limit", "remaining", "reset"):
            assert f"anthropic-ratelimit-{dim}-{part}" in h
    datetime.fromisoformat(h["anthropic-ratelimit-requests-reset"].replace("Z", "+00:00"))
    assert e.request_id == h["request-id"]
    stats = client.get("/_sim/stats", cast_to=object)
    assert stats["rate_limited"] == 1 and stats["by_endpoint"]["POST /v1/messages"] == {"200": 3, "429": 1}


def test_input_token_limit(sim, client) -> None:
    sim.configure(itpm=2500)
    ask(client, "a", system=LONG_SYSTEM[:6000])  # ~1,500 tokens
    with pytest.raises(anthropic.RateLimitError) as err:
        ask(client, "b", system=LONG_SYSTEM[:6000])
    assert "input tokens per minute" in err.value.message


def test_spend_limit_is_not_transient(sim, client) -> None:
    sim.configure(spend_limit_after=1)
    ask(client, "ok")
    with pytest.raises(anthropic.EnforcedSpendLimitReachedError) as err:
        ask(client, "over budget")
    assert isinstance(err.value, anthropic.RateLimitError)
    assert err.value.error_code == "enforced_spend_limit_reached"
    assert err.value.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in err.value.response.headers


def test_invalid_requests_are_400(client) -> None:
    with pytest.raises(anthropic.BadRequestError) as err:
        client.post(
            "/v1/messages", cast_to=object, body={"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
        )
    assert err.value.type == "invalid_request_error" and "max_tokens" in err.value.api_message
    with pytest.raises(anthropic.BadRequestError):
        client.post("/v1/messages", cast_to=object, body={"model": MODEL, "max_tokens": 5, "messages": []})
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve("msgbatch_nope")


def test_overloaded_and_internal_errors(sim, client) -> None:
    sim.configure(fault_rates={"529": 1.0})
    with pytest.raises(anthropic.OverloadedError) as err:
        ask(client, "x")
    assert err.value.status_code == 529 and err.value.type == "overloaded_error"
    sim.configure(fault_rates="500=1")
    with pytest.raises(anthropic.InternalServerError) as err:
        ask(client, "x")
    assert err.value.status_code == 500 and err.value.type == "api_error"


def test_seeded_fault_sequence_is_deterministic(sim, client) -> None:
    def outcomes() -> list[str]:
        out = []
        for i in range(20):
            try:
                ask(client, f"q{i}", max_tokens=16)
                out.append("ok")
            except anthropic.APIStatusError as e:
                out.append(str(e.status_code))
        return out

    sim.configure(fault_rates="529=0.3,500=0.2", seed=7)
    first = outcomes()
    sim.reset()
    sim.configure(fault_rates="529=0.3,500=0.2", seed=7)
    assert outcomes() == first
    assert {"ok", "529", "500"} <= set(first)
    sim.configure(fault_script=["529", "ok", "500"])
    assert outcomes()[:3] == ["529", "ok", "500"]


def test_retrying_client_recovers_from_scripted_529(sim) -> None:
    sim.configure(fault_script=["529", "529"])
    c = anthropic.Anthropic(api_key="test", base_url=sim.base_url, max_retries=2)
    msg = c.messages.create(model=MODEL, max_tokens=256, messages=[{"role": "user", "content": "x"}])
    assert msg.stop_reason == "end_turn"
    assert sim.stats()["by_endpoint"]["POST /v1/messages"] == {"529": 2, "200": 1}


def test_malformed_truncated_and_refusal(sim, client) -> None:
    # A 200 whose JSON body is cut: the SDK raises the json decoder's error, not an APIError.
    with pytest.raises(json.JSONDecodeError):
        ask(client, "x [[fault:malformed]]", output_config=OUTPUT_CONFIG)
    msg = ask(client, "x [[fault:truncated]]", output_config=OUTPUT_CONFIG)
    assert msg.stop_reason == "max_tokens"
    with pytest.raises(json.JSONDecodeError):
        json.loads(msg.content[0].text)
    msg = ask(client, "x [[fault:refusal]]", output_config=OUTPUT_CONFIG)
    assert msg.stop_reason == "refusal" and msg.content == []
    assert msg.stop_details is not None and msg.stop_details.type == "refusal"
    sim.configure(fault_rates={"truncated": 1.0})
    assert ask(client, "y").stop_reason == "max_tokens"
    assert sim.stats()["faults"] == {"malformed": 1, "truncated": 2, "refusal": 1}


def test_timeout_and_disconnect(sim) -> None:
    c = anthropic.Anthropic(api_key="test", base_url=sim.base_url, max_retries=0, timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(anthropic.APITimeoutError):
        c.messages.create(model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "x [[fault:timeout]]"}])
    assert time.monotonic() - t0 >= 0.45
    with pytest.raises(anthropic.APIConnectionError) as err:
        c.messages.create(model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "x [[fault:disconnect]]"}])
    assert not isinstance(err.value, anthropic.APITimeoutError)
    # The server keeps serving afterwards.
    assert c.messages.create(model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "x"}]).content


# --------------------------------------------------------------------------- latency and concurrency


def test_latency_is_honoured(sim, client) -> None:
    sim.configure(latency="fixed:0.3")
    t0 = time.monotonic()
    ask(client, "slow")
    assert time.monotonic() - t0 >= 0.3
    sim.configure(latency_min=0.3, latency_median=0.35, latency_max=0.5)
    t0 = time.monotonic()
    ask(client, "slow again")
    assert time.monotonic() - t0 >= 0.3
    sim.configure(latency="none")
    t0 = time.monotonic()
    ask(client, "fast")
    assert time.monotonic() - t0 < 0.3


def test_latency_spec_parsing() -> None:
    spec = parse_latency("lognormal:median=2,p99=20,min=2,max=30")
    import random

    rng = random.Random(0)
    samples = sorted(spec.sample(rng) for _ in range(2000))
    assert samples[0] >= 2 and samples[-1] <= 30
    assert 1.8 <= samples[1000] <= 3.0 and samples[1980] > 8  # long tail
    with pytest.raises(ValueError):
        SimulatorConfig().updated({"fault_rates": "529=0.7,500=0.7"})
    with pytest.raises(ValueError):
        SimulatorConfig().updated({"no_such_key": 1})


def test_many_concurrent_slow_requests(sim) -> None:
    sim.configure(latency="fixed:0.8")
    n = 60

    async def run() -> float:
        async with anthropic.AsyncAnthropic(api_key="test", base_url=sim.base_url, max_retries=0, timeout=120) as c:
            t0 = time.monotonic()
            msgs = await asyncio.gather(
                *[
                    c.messages.create(model=MODEL, max_tokens=16, messages=[{"role": "user", "content": f"q{i}"}])
                    for i in range(n)
                ]
            )
            assert all(m.stop_reason in ("end_turn", "max_tokens") for m in msgs)
            return time.monotonic() - t0

    asyncio.run(run())  # no timing bound (shared machines are noisy): max_in_flight shows the concurrency
    stats = sim.stats()
    assert stats["messages_ok"] == n
    assert stats["max_in_flight"] >= n * 0.5  # served concurrently, not one at a time


# --------------------------------------------------------------------------- control surface and CLI


def test_control_endpoints_over_http(sim, client) -> None:
    cfg = client.post("/_sim/config", cast_to=object, body={"rpm": 1, "fault_rate": "refusal=1"})
    assert cfg["rpm"] == 1 and cfg["fault_rates"] == {"refusal": 1.0}
    assert ask(client, "x").stop_reason == "refusal"
    with pytest.raises(anthropic.RateLimitError):
        ask(client, "y")
    with pytest.raises(anthropic.BadRequestError):
        client.post("/_sim/config", cast_to=object, body={"bogus": 1})
    client.post("/_sim/reset", cast_to=object, body={})
    stats = client.get("/_sim/stats", cast_to=object)
    assert stats["requests_total"] == 0 and stats["by_endpoint"] == {}
    assert client.get("/_sim/config", cast_to=object)["rpm"] == 0
    assert ask(client, "z").stop_reason == "end_turn"


def test_cli_starts_and_serves() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tooling.llm_simulator",
            "--port",
            "0",
            "--rpm",
            "600",
            "--fault-rate",
            "529=0.05,500=0.05",
            "--seed",
            "1",
            "--latency",
            "none",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "listening on" in line, proc.stderr.read() if proc.poll() is not None else line
        base_url = line.strip().rsplit(" ", 1)[-1]
        c = anthropic.Anthropic(api_key="test", base_url=base_url, max_retries=3)
        msg = c.messages.create(model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "x"}])
        assert msg.content
        cfg = c.get("/_sim/config", cast_to=object)
        assert cfg["rpm"] == 600 and cfg["fault_rates"] == {"529": 0.05, "500": 0.05} and cfg["seed"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_sdk_reads_base_url_from_environment(sim, monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", sim.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test")
    c = anthropic.Anthropic(max_retries=0)
    assert c.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "env"}]).content
    assert sim.stats()["messages_ok"] == 1


def test_reset_restores_start_up_fault_script() -> None:
    with start_simulator(fault_script=["529", "ok"]) as sim2:
        c = anthropic.Anthropic(api_key="test", base_url=sim2.base_url, max_retries=0)
        for _ in range(2):
            with pytest.raises(anthropic.OverloadedError):
                ask(c, "x")
            assert ask(c, "x").content
            assert ask(c, "x").content
            sim2.reset()
