"""What the pipeline's events tell Prometheus, and the one log line per stage attempt.

Event metrics are recorded where the event happens — in the worker that ran the stage — from the
`stage_finished` signal. With `PROMETHEUS_MULTIPROC_DIR` set they land in per-process files that
one endpoint per host aggregates (see `project/metrics.py`). State read at scrape time (queue
depth, dead letters, the review backlog) lives in `project/metrics.py`, not here.

`connect()` subscribes the receivers; the model client and the limiter call `llm_rate_limited` and
`observe_limiter_wait` (this module does not import the pipeline at load time, so they can).
Nothing here may break the pipeline: the receivers run in the pipeline's on-commit hook, so they
catch and log their own errors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from django.utils import timezone
from prometheus_client import Counter, Histogram

from project.logging import bind
from tickets.models import TERMINAL

log = logging.getLogger("agents.stage")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# End to end: fine around the 500 ms objective of the core flow, coarse up to a day for people.
E2E_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 86400.0)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0)
WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

STAGE_DURATION = Histogram(
    "pipeline_stage_duration_seconds",
    "One stage attempt, by stage, tier and outcome (ok|retry|failed|escalated).",
    ["stage", "tier", "outcome"],
    buckets=LATENCY_BUCKETS,
)
END_TO_END = Histogram(
    "pipeline_end_to_end_seconds",
    "From the request's arrival to its terminal state; path is core (cheap tiers), llm or human.",
    ["outcome", "path"],
    buckets=E2E_BUCKETS,
)
ESCALATIONS = Counter("pipeline_escalations_total", "Tickets sent to a person, by the stage that sent them.", ["stage"])
FALLBACKS = Counter("pipeline_tier_fallbacks_total", "Stages the cheap tiers handed over to the llm queue.", ["stage"])
DEAD_LETTERS = Counter("pipeline_dead_letters_total", "Tickets dead-lettered, by the stage that failed.", ["stage"])
CONFIDENCE = Histogram(
    "pipeline_confidence",
    "Confidence a stage reported, by stage and tier.",
    ["stage", "tier"],
    buckets=CONFIDENCE_BUCKETS,
)
MODEL_CALLS = Counter(
    "pipeline_model_calls_total",
    "Stage attempts answered by a model, by model and cache (hit|miss).",
    ["model", "cache"],
)
TOKENS = Counter("pipeline_tokens_total", "Model tokens, by model and kind (input|output).", ["model", "kind"])
COST = Counter("pipeline_cost_usd_total", "Money spent on models, in US dollars, by model.", ["model"])
RATE_LIMITED = Counter("pipeline_llm_rate_limited_total", "429 answers from the model provider, by model.", ["model"])
LIMITER_WAIT = Histogram(
    "pipeline_rate_limiter_wait_seconds",
    "Time spent waiting for the shared rate limiter before a call.",
    ["model"],
    buckets=WAIT_BUCKETS,
)


def model_label(model: str) -> str:
    """Bound the label: every retrained local model is still `local`."""
    if model.startswith("local:"):
        return "local"
    return model or "none"


def llm_rate_limited(model: str) -> None:
    """Count a 429 from the provider (called by the model client)."""
    RATE_LIMITED.labels(model_label(model)).inc()


def observe_limiter_wait(model: str, seconds: float) -> None:
    """Record how long a call waited for the shared limiter (called by the limiter)."""
    LIMITER_WAIT.labels(model_label(model)).observe(max(seconds, 0.0))


@contextmanager
def limiter_wait(model: str) -> Iterator[None]:
    """`with limiter_wait(model): limiter.acquire()` records the wait, however it ends."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        observe_limiter_wait(model, time.perf_counter() - t0)


def _handed_over(stage: str, outcome: str, new_status: str) -> bool:
    # A hand-over commits the attempt but leaves the ticket in the same stage's status.
    from agents.pipeline.spec import SPEC

    return outcome == "ok" and stage in SPEC.by_name and SPEC.by_name[stage].status == new_status


def record_stage(
    *,
    stage: str,
    outcome: str,
    duration_ms: float,
    tier: str,
    model: str,
    confidence: float | None,
    input_tokens: int,
    output_tokens: int,
    cost_usd: float,
    cache_hit: bool,
    new_status: str,
    ticket_id: str,
    created_at: datetime | None,
    path: str = "core",
    **_: Any,
) -> None:
    """Move the metrics for one persisted stage attempt."""
    STAGE_DURATION.labels(stage, tier or "none", outcome).observe(duration_ms / 1000.0)
    if confidence is not None:
        CONFIDENCE.labels(stage, tier or "none").observe(confidence)
    if outcome == "escalated":
        ESCALATIONS.labels(stage).inc()
    elif outcome == "failed":
        DEAD_LETTERS.labels(stage).inc()
    elif _handed_over(stage, outcome, new_status):
        FALLBACKS.labels(stage).inc()
    if model:
        label = model_label(model)
        MODEL_CALLS.labels(label, "hit" if cache_hit else "miss").inc()
        TOKENS.labels(label, "input").inc(input_tokens or 0)
        TOKENS.labels(label, "output").inc(output_tokens or 0)
        if cost_usd:
            COST.labels(label).inc(cost_usd)
    if new_status in TERMINAL and created_at is not None:
        elapsed = (timezone.now() - created_at).total_seconds()
        END_TO_END.labels(new_status, path).observe(max(elapsed, 0.0))


def log_stage(
    *, ticket_id: str, client_id: int, stage: str, attempt: int, outcome: str, duration_ms: float, **fields: Any
) -> None:
    """The one log line of a stage attempt; it also binds the attempt to the rest of the task's lines."""
    bind(ticket_id=ticket_id, client_id=client_id, stage=stage, attempt=attempt)
    level = {"ok": logging.INFO, "escalated": logging.INFO, "retry": logging.WARNING}.get(outcome, logging.ERROR)
    extra = {
        k: fields.get(k)
        for k in ("tier", "model", "confidence", "input_tokens", "output_tokens", "cost_usd", "cache_hit", "new_status")
    }
    log.log(
        level,
        "%s attempt %s %s in %.1f ms",
        stage,
        attempt,
        outcome,
        duration_ms,
        extra={"outcome": outcome, "duration_ms": round(duration_ms, 3), **extra},
    )


def _on_stage_finished(sender: Any, **kwargs: Any) -> None:
    for hook in (record_stage, log_stage):
        try:
            hook(**kwargs)
        except Exception:  # observability must never fail the stage that was just committed
            logging.getLogger(__name__).exception("observability hook %s failed", hook.__name__)


def connect() -> None:
    """Subscribe to the pipeline's `stage_finished` (idempotent; called from `AgentsConfig.ready`)."""
    from agents.pipeline.events import stage_finished  # here, so the model client may import the helpers above

    stage_finished.connect(_on_stage_finished, dispatch_uid="agents.metrics.stage_finished")
