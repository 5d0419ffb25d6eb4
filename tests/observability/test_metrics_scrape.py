"""Metrics: a pipeline run moves what a scrape shows; state gauges read Redis and Postgres; the
multiprocess files of several worker processes add up in one scrape."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import RequestFactory
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agents import metrics
from agents.models import DeadLetter
from project import metrics as scrape
from reviews.models import Review
from tests.conftest import wait_for
from tests.factories import client_with_token, ticket_make, ticket_payload
from tickets.models import Status, Ticket

metrics.connect()  # what AgentsConfig.ready() does in the product
ROOT = Path(__file__).resolve().parents[2]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: bytes | str) -> Samples:
    text = text.decode() if isinstance(text, bytes) else text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


def settled(ticket_id: str) -> Ticket:
    terminal = {Status.RESOLVED, Status.AWAITING_REVIEW, Status.DEAD_LETTERED}
    return wait_for(lambda: (t := Ticket.objects.get(pk=ticket_id)).status in terminal and t, what="a settled ticket")


@pytest.mark.pipeline
def test_a_pipeline_run_moves_the_scraped_stage_escalation_model_and_end_to_end_metrics(pipeline, api):
    http, _ = api()
    before = parse(scrape.render(include_state=False))
    resolved = http.post("/api/v1/tickets/", ticket_payload(body="My card still hasn't arrived"), format="json")
    escalated = http.post("/api/v1/tickets/", ticket_payload(body="Why is the sky blue on Tuesdays?"), format="json")
    assert settled(resolved.json()["id"]).status == Status.RESOLVED
    assert settled(escalated.json()["id"]).status == Status.AWAITING_REVIEW

    def after_both() -> Samples | None:
        now = parse(scrape.render(include_state=False))
        return now if moved(before, now, "pipeline_end_to_end_seconds_count") == 2 else None

    after = wait_for(after_both, what="both end-to-end observations")

    stage_count = "pipeline_stage_duration_seconds_count"
    assert moved(before, after, stage_count, stage="parse", outcome="ok") == 2
    assert moved(before, after, stage_count, stage="classify", outcome="ok") == 2
    assert moved(before, after, stage_count, stage="classify", tier="rules", outcome="ok") == 1
    assert moved(before, after, stage_count, stage="decide", outcome="ok") == 1
    assert moved(before, after, stage_count, stage="decide", outcome="escalated") == 1
    assert moved(before, after, stage_count, stage="execute", outcome="ok") == 1
    assert moved(before, after, stage_count, stage="escalate", outcome="ok") == 1
    assert moved(before, after, stage_count, outcome="failed") == 0
    assert moved(before, after, "pipeline_stage_duration_seconds_sum", stage="parse") > 0
    assert moved(before, after, "pipeline_escalations_total", stage="decide") == 1
    assert moved(before, after, "pipeline_confidence_count", stage="classify", tier="rules") == 1
    assert moved(before, after, "pipeline_model_calls_total", model="rules", cache="miss") == 1
    e2e = "pipeline_end_to_end_seconds_count"
    assert moved(before, after, e2e, outcome="resolved", path="core") == 1
    assert moved(before, after, e2e, outcome="awaiting_review", path="core") == 1
    # Both finished well inside a minute: the +Inf bucket and the 60 s bucket moved alike.
    assert moved(before, after, "pipeline_end_to_end_seconds_bucket", le="60.0") == 2


def test_the_model_client_helpers_count_429s_and_the_wait_for_the_limiter():
    before = parse(scrape.render(include_state=False))

    metrics.llm_rate_limited("claude-haiku-4-5")
    with metrics.limiter_wait("claude-haiku-4-5"):
        pass
    metrics.observe_limiter_wait("local:abc123", 2.0)

    after = parse(scrape.render(include_state=False))
    assert moved(before, after, "pipeline_llm_rate_limited_total", model="claude-haiku-4-5") == 1
    assert moved(before, after, "pipeline_rate_limiter_wait_seconds_count", model="claude-haiku-4-5") == 1
    assert moved(before, after, "pipeline_rate_limiter_wait_seconds_sum", model="local") == 2.0


def state_samples() -> Samples:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(scrape.PipelineStateCollector(cache_seconds=0))  # type: ignore[arg-type]
    return parse(generate_latest(registry))


def test_dead_letters_and_the_review_backlog_are_read_from_postgres_at_scrape_time(db, settings):
    settings.OBSERVABILITY = {"REVIEW_SLA_SECONDS": 3600, "LLM_BUDGET_USD_PER_DAY": 25.0}
    client, _ = client_with_token()
    tickets = [ticket_make(client, status=Status.AWAITING_REVIEW) for _ in range(4)]
    DeadLetter.objects.create(ticket=tickets[0], stage="execute", reason="out of retries", attempts=5)
    DeadLetter.objects.create(ticket=tickets[1], stage="parse", reason="permanent error", attempts=1)
    DeadLetter.objects.create(ticket=tickets[2], stage="execute", reason="x", attempts=5, replayed_at=timezone.now())
    oldest = Review.objects.create(ticket=tickets[0], reason="low_confidence")
    Review.objects.filter(pk=oldest.pk).update(created_at=timezone.now() - timedelta(hours=3))
    Review.objects.create(ticket=tickets[1], reason="low_confidence", status="claimed")
    Review.objects.create(ticket=tickets[2], reason="policy")
    Review.objects.create(ticket=tickets[3], reason="policy", status="resolved")

    samples = state_samples()

    assert total(samples, "pipeline_dead_letters_pending") == 2
    assert total(samples, "pipeline_review_backlog", reason="low_confidence") == 2
    assert total(samples, "pipeline_review_backlog", reason="policy") == 1
    assert total(samples, "pipeline_review_backlog", reason="customer_asked") == 0  # present, at zero
    assert 3 * 3600 <= total(samples, "pipeline_review_oldest_age_seconds") < 3 * 3600 + 60
    assert total(samples, "pipeline_review_sla_seconds") == 3600
    assert total(samples, "pipeline_spend_budget_usd_per_day") == 25.0
    assert total(samples, "pipeline_state_scrape_error") == 0


def test_queue_depth_is_the_length_of_every_priority_list_of_the_queue_in_redis(db):
    from project.celery import app

    queue = "obs_depth_probe"  # nobody consumes it
    for priority in (0, 5, 9):
        app.send_task("obs.never_runs", queue=queue, priority=priority)
    try:
        depths, unacked = scrape.queue_depths([queue, "parse"])
        with app.connection_for_read() as conn:
            channel = conn.default_channel  # keys sit under the transport's global prefix, if any
            keys = {k.decode() for k in channel.client.keys(f"{channel.global_keyprefix}{queue}*")}
        assert depths[queue] == 3
        assert len(keys) == 3  # the priority steps are separate lists; all of them are counted
        assert isinstance(unacked, int)  # Redis reports what is delivered and not yet acknowledged
        samples = state_samples()
        assert {dict(ls)["queue"] for (n, ls) in samples if n == "pipeline_queue_depth"} >= {
            "parse",
            "classify",
            "decide",
            "execute",
            "escalate",
            "llm",
            "webhooks",
            "maintenance",
        }
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge(queue)


def test_the_api_metrics_view_and_a_worker_exporter_serve_the_same_metrics(db):
    metrics.llm_rate_limited("probe-model")
    response = scrape.metrics_view(RequestFactory().get("/metrics"))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    body = response.content.decode()
    assert 'pipeline_llm_rate_limited_total{model="probe-model"}' in body
    assert "pipeline_queue_depth{" in body and "pipeline_review_backlog{" in body  # the API adds state

    server = scrape.start_exporter(0, "127.0.0.1")
    assert server is not None
    try:
        exported = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5).text
        assert 'pipeline_llm_rate_limited_total{model="probe-model"}' in exported
        assert "pipeline_queue_depth" not in exported  # workers export events only
        assert scrape.start_exporter(server.server_port, "127.0.0.1") is None  # port taken: skip quietly
    finally:
        server.shutdown()
        server.server_close()


WORKERS = textwrap.dedent(
    """
    import os, django
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    django.setup()
    from agents import metrics
    from agents.models import Trace
    from agents.pipeline.events import stage_finished
    metrics.connect()
    child = os.fork()  # two worker processes, like a prefork pool's children
    stage_finished.send(
        sender=Trace, ticket_id="00000000-0000-0000-0000-000000000000", client_id=1, stage="classify", attempt=1,
        outcome="ok", duration_ms=12.0, tier="llm", model="claude-haiku-4-5", confidence=0.8, input_tokens=100,
        output_tokens=20, cost_usd=0.0015, cache_hit=True, new_status="deciding", created_at=None,
    )
    metrics.llm_rate_limited("claude-haiku-4-5")
    if child == 0:
        os._exit(0)
    assert os.waitpid(child, 0)[1] == 0
    """
)


def test_two_worker_processes_in_multiprocess_mode_add_up_in_one_scrape(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", WORKERS], cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert len(list(tmp_path.glob("counter_*.db"))) == 2  # one file per process (and metric type)

    samples = parse(scrape.render(include_state=False, path=str(tmp_path)))

    model = {"model": "claude-haiku-4-5"}
    assert total(samples, "pipeline_stage_duration_seconds_count", stage="classify", tier="llm") == 2
    assert total(samples, "pipeline_tokens_total", kind="input", **model) == 200
    assert total(samples, "pipeline_tokens_total", kind="output", **model) == 40
    assert total(samples, "pipeline_cost_usd_total", **model) == pytest.approx(0.003)
    assert total(samples, "pipeline_model_calls_total", cache="hit", **model) == 2
    assert total(samples, "pipeline_llm_rate_limited_total", **model) == 2
    assert total(samples, "pipeline_confidence_count", stage="classify") == 2


def test_an_observability_failure_never_breaks_the_stage(caplog: Any):
    from agents.models import Trace

    metrics._on_stage_finished(sender=Trace, stage="parse")  # missing fields: the hooks fail, quietly
    assert "observability hook record_stage failed" in caplog.text
