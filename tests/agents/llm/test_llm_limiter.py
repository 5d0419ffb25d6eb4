"""The shared limiter: token buckets in Redis, the same for every process, refunds, pauses, headers."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import pytest

from agents.llm.base import LimiterBusy, Usage
from agents.llm.limiter import RateLimiter, reported_limits


@pytest.fixture
def limits(llm: Any, configure: Any) -> Any:
    """Set the small class's limits exactly (no headroom) and return a fresh limiter."""

    def make(**small: Any) -> RateLimiter:
        configure(HEADROOM=1.0, LIMITS={"small": {"rpm": 0, "itpm": 0, "otpm": 0, **small}})
        return RateLimiter()

    return make


def _grab(url: str, prefix: str, llm_conf: dict[str, Any], count: int, out: Any) -> None:
    """A separate process with its own Redis connection, taking `count` grants as fast as allowed."""
    import redis
    from django.conf import settings

    try:
        settings.LLM = llm_conf
        limiter = RateLimiter(redis.Redis.from_url(url))
        stamps = []
        for _ in range(count):
            lease = limiter.acquire("small", input_tokens=1, output_tokens=1, max_wait=30)
            stamps.append(time.time())
            limiter.settle(lease, used=Usage(1, 1))
        out.put(stamps)
    except BaseException as exc:  # reported to the test, not lost in the child
        out.put(repr(exc))


def test_two_processes_share_one_budget_and_never_exceed_it_together(limits, settings):
    limits(rpm=1200, itpm=0, otpm=0)  # 20 a second; burst of 1 s = 20
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_grab, args=(settings.REDIS_URL, "", settings.LLM, 30, out)) for _ in range(2)]
    for p in procs:
        p.start()
    stamps = sorted(out.get(timeout=30) + out.get(timeout=30))
    for p in procs:
        p.join(10)

    assert len(stamps) == 60
    # Token-bucket conformance: any n consecutive grants need (n - burst) / rate seconds between them.
    for i in range(len(stamps)):
        for j in range(i + 20, len(stamps)):
            assert stamps[j] - stamps[i] >= (j - i + 1 - 20) / 20 - 0.06, (i, j)
    span = stamps[-1] - stamps[0]
    assert 1.8 <= span <= 2.6  # 40 beyond the burst at 20/s: the budget was used, not wasted


def test_an_estimate_is_reserved_then_refunded_against_the_real_usage(limits):
    limiter = limits(itpm=6000)  # 100 a second, bucket of 100
    lease = limiter.acquire("small", input_tokens=80, output_tokens=0)
    assert limiter.state("small")["i"] == pytest.approx(20, abs=2)

    limiter.settle(lease, used=Usage(input_tokens=5, cache_write_tokens=5, cache_read_tokens=500))

    # 70 of the 80 come back; cache reads do not count against input tokens per minute.
    assert limiter.state("small")["i"] == pytest.approx(90, abs=3)
    assert limiter.state("small")["in_flight"] == 0


def test_no_room_within_the_wait_raises_busy_and_takes_nothing(limits):
    limiter = limits(rpm=60)  # one a second, a bucket of one
    limiter.acquire("small", input_tokens=1, output_tokens=1)
    level = limiter.state("small")["r"]

    with pytest.raises(LimiterBusy) as busy:
        limiter.acquire("small", input_tokens=1, output_tokens=1, max_wait=0.1)

    assert 0.5 < busy.value.retry_after <= 1.0 and not busy.value.permanent and busy.value.deferred
    assert limiter.state("small")["r"] == pytest.approx(level, abs=0.2)
    started = time.monotonic()
    limiter.acquire("small", input_tokens=1, output_tokens=1, max_wait=2)  # books the next slot and sleeps to it
    assert 0.5 < time.monotonic() - started < 1.3


def test_a_pause_holds_every_worker_until_the_retry_after(limits):
    limiter, other = limits(rpm=6000), RateLimiter()
    limiter.pause("small", 0.6)

    with pytest.raises(LimiterBusy) as busy:
        other.acquire("small", input_tokens=1, output_tokens=1, max_wait=0)
    assert 0.4 < busy.value.retry_after <= 0.6
    started = time.monotonic()
    other.acquire("small", input_tokens=1, output_tokens=1, max_wait=2)
    assert time.monotonic() - started >= 0.4


def test_the_ratelimit_headers_lower_the_limit_and_the_level(limits):
    limiter = limits(rpm=600)
    lease = limiter.acquire("small", input_tokens=1, output_tokens=1)

    headers = {"anthropic-ratelimit-requests-limit": "60", "anthropic-ratelimit-requests-remaining": "0"}
    limiter.settle(lease, used=Usage(1, 1), headers=headers)

    state = limiter.state("small")
    assert state["hr"] == 60 and state["r"] <= 0
    with pytest.raises(LimiterBusy) as busy:
        limiter.acquire("small", input_tokens=1, output_tokens=1, max_wait=0)
    assert busy.value.retry_after == pytest.approx(1.0, abs=0.2)  # the provider's 60/min, not our 600


def test_calls_in_flight_are_capped_across_workers_and_a_dead_workers_slot_expires(limits, configure):
    limiter = limits(rpm=60_000)
    configure(MAX_IN_FLIGHT=2, LEASE_SECONDS=0.5)
    first = limiter.acquire("small", input_tokens=1, output_tokens=1)
    limiter.acquire("small", input_tokens=1, output_tokens=1)  # never settled: its worker "died"

    with pytest.raises(LimiterBusy):
        RateLimiter().acquire("small", input_tokens=1, output_tokens=1, max_wait=0.2)
    limiter.settle(first)
    RateLimiter().acquire("small", input_tokens=1, output_tokens=1, max_wait=0.2)
    time.sleep(0.6)
    assert limiter.state("small")["in_flight"] == 2  # the dead one still listed, but expired:
    RateLimiter().acquire("small", input_tokens=1, output_tokens=1, max_wait=0.2)


def test_a_tenant_past_its_share_gives_way_to_another_waiting_for_the_shared_limit(limits, configure):
    limiter = limits(rpm=60_000)
    configure(MAX_IN_FLIGHT=4)
    hog = [limiter.acquire("small", input_tokens=1, output_tokens=1, tenant="a") for _ in range(4)]  # alone: all of it
    with pytest.raises(LimiterBusy):  # the cap is full: b waits (and is known to be waiting)
        limiter.acquire("small", input_tokens=1, output_tokens=1, max_wait=0, tenant="b")
    limiter.settle(hog.pop())

    with pytest.raises(LimiterBusy, match="share"):  # a holds 3 of 4 while b waits: its share is 2
        limiter.acquire("small", input_tokens=1, output_tokens=1, max_wait=0, tenant="a")
    lease = limiter.acquire("small", input_tokens=1, output_tokens=1, max_wait=0, tenant="b")  # the slot is b's

    limiter.settle(lease)
    limiter.settle(hog.pop())
    limiter.settle(hog.pop())  # a holds 1 now, below its share: b waiting or not, it is served
    limiter.acquire("small", input_tokens=1, output_tokens=1, max_wait=0, tenant="a")


def test_unreadable_headers_are_ignored():
    assert reported_limits({"anthropic-ratelimit-requests-limit": "lots"})[:2] == [-1, -1]
    assert reported_limits(None) == [-1] * 6
