"""Scraping: one endpoint per host for every process's event metrics, plus state read at scrape time.

Event metrics (`agents/metrics.py`) are written by whichever process ran the stage. With
`PROMETHEUS_MULTIPROC_DIR` set (a host-local directory, wiped when the host's processes start),
prometheus-client keeps them in per-process files and `MultiProcessCollector` sums them at
scrape time, so a host with a web server and eight workers (and their prefork children) answers
one scrape. Without it, a scrape sees this process's registry (the in-process test worker).

- The API serves `/metrics` through `metrics_view`: its own and, on a one-host deployment like
  `make run`, every worker's metrics, plus the state gauges below.
- A worker host without the API sets `WORKER_METRICS_PORT`: on `worker_ready` each worker tries
  to serve the host's directory on that port; the first to bind serves, the others skip.

State gauges (queue depth, unacked messages, live workers and the tasks they hold per queue, pending
dead letters, the review backlog, the budget and SLA that alerts compare against) are global facts
read from the broker, Redis and Postgres. Only
the API reports them, cached for a few seconds; every API instance reports the same numbers, so
dashboards and alerts take `max()` across instances. This module may see every app; reviews is
reached through the app registry so that nothing here imports it at load time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from celery.signals import worker_process_shutdown, worker_ready
from django.apps import apps
from django.conf import settings
from django.db.models import Count, Min
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric

log = logging.getLogger(__name__)

DEFAULTS = {"LLM_BUDGET_USD_PER_DAY": 100.0, "REVIEW_SLA_SECONDS": 4 * 3600, "STATE_CACHE_SECONDS": 10.0}


def option(name: str) -> Any:
    """An observability setting from `settings.OBSERVABILITY`, with its default."""
    return {**DEFAULTS, **getattr(settings, "OBSERVABILITY", {})}[name]


def multiproc_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def broker_queue_names() -> list[str]:
    """Every queue the Celery app declares."""
    from project.celery import app

    return [q.name for q in app.conf.task_queues or []] or [app.conf.task_default_queue]


def queue_depths(queues: Iterable[str]) -> tuple[dict[str, int], int | None]:
    """Messages waiting per queue, and (Redis only) messages delivered but not yet acknowledged.

    On Redis, a queue is a list per priority step (`name`, then `name\\x06\\x163`, ... with kombu's
    separator), under the transport's global key prefix; kombu's channel knows all three, so we ask
    it for the key names and LLEN them in one round trip. On RabbitMQ a passive declare reports a
    queue's ready messages (what workers hold is in `pipeline_queue_in_flight`, project/heartbeat.py).
    """
    from project.celery import app

    queues = list(queues)
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        if not hasattr(channel, "_q_for_pri"):  # not Redis
            return {q: _declared_depth(conn, q) for q in queues}, None
        steps = channel.priority_steps
        with channel.conn_or_acquire() as client, client.pipeline() as pipe:
            for q in queues:
                for key in dict.fromkeys(channel._q_for_pri(q, pri) for pri in steps):
                    pipe.llen(key)
            pipe.hlen(channel.unacked_key)
            sizes = pipe.execute()
    unacked, depths, i = int(sizes.pop()), {}, 0
    for q in queues:
        n = len(dict.fromkeys(channel._q_for_pri(q, pri) for pri in steps))
        depths[q] = sum(int(s) for s in sizes[i : i + n])
        i += n
    return depths, unacked


def _declared_depth(conn: Any, queue: str) -> int:
    """A queue's ready messages by a passive declare, on a channel of its own: a queue nobody
    declared yet holds nothing, and the error that says so closes the channel it was asked on."""
    channel = conn.channel()
    try:
        return int(channel.queue_declare(queue=queue, passive=True).message_count)
    except conn.channel_errors:
        return 0
    finally:
        with contextlib.suppress(Exception):
            channel.close()


def dead_letters_pending() -> int:
    """Dead letters nobody has replayed yet."""
    return apps.get_model("agents", "DeadLetter").objects.filter(replayed_at__isnull=True).count()


def review_backlog() -> tuple[dict[str, int], float]:
    """Live reviews (open or claimed) by every reason (zeros too), and the oldest one's age in seconds."""
    review = apps.get_model("reviews", "Review")
    rows = (
        review.objects.filter(status__in=["open", "claimed"])
        .order_by()
        .values("reason")
        .annotate(n=Count("id"), oldest=Min("created_at"))
    )
    now, oldest = timezone.now(), None
    counts = {value: 0 for value, _label in review._meta.get_field("reason").choices or []}
    for row in rows:
        counts[row["reason"]] = row["n"]
        oldest = row["oldest"] if oldest is None else min(oldest, row["oldest"])
    return counts, (now - oldest).total_seconds() if oldest else 0.0


class PipelineStateCollector:
    """Gauges read from Redis and Postgres at scrape time, cached for `cache_seconds`."""

    def __init__(self, cache_seconds: float | None = None) -> None:
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def collect(self) -> Iterator[Metric]:
        ttl = option("STATE_CACHE_SECONDS") if self.cache_seconds is None else self.cache_seconds
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] >= ttl:
                self._cached = (time.monotonic(), self._read())
            metrics = self._cached[1]
        yield from metrics

    def _read(self) -> list[Metric]:
        errors = GaugeMetricFamily(
            "pipeline_state_scrape_error", "1 when a state source could not be read.", labels=["source"]
        )
        out: list[Metric] = []
        for source, read in (("redis", self._broker), ("postgres", self._database), ("workers", self._workers)):
            try:
                out.extend(read())
                errors.add_metric([source], 0)
            except Exception:
                log.warning("could not read %s for metrics", source, exc_info=True)
                errors.add_metric([source], 1)
        budget = GaugeMetricFamily("pipeline_spend_budget_usd_per_day", "The model spend budget alerts compare to.")
        budget.add_metric([], float(option("LLM_BUDGET_USD_PER_DAY")))
        sla = GaugeMetricFamily("pipeline_review_sla_seconds", "How old a live review may get before alerting.")
        sla.add_metric([], float(option("REVIEW_SLA_SECONDS")))
        return [*out, errors, budget, sla]

    def _broker(self) -> list[Metric]:
        depths, unacked = queue_depths(broker_queue_names())
        depth = GaugeMetricFamily("pipeline_queue_depth", "Messages waiting in a broker queue.", labels=["queue"])
        for queue, n in sorted(depths.items()):
            depth.add_metric([queue], n)
        out: list[Metric] = [depth]
        if unacked is not None:
            out.append(
                GaugeMetricFamily(
                    "pipeline_broker_unacked_messages",
                    "Delivered to a worker, not yet acknowledged (running or waiting out a countdown).",
                    value=unacked,
                )
            )
        return out

    def _workers(self) -> list[Metric]:
        from project.heartbeat import queue_workers

        workers, in_flight = queue_workers(broker_queue_names())
        live = GaugeMetricFamily(
            "pipeline_queue_workers", "Live workers consuming a queue (heartbeat within 5 s).", labels=["queue"]
        )
        held = GaugeMetricFamily(
            "pipeline_queue_in_flight",
            "Tasks from a queue that live workers hold (reserved or running).",
            labels=["queue"],
        )
        for queue in sorted(workers):
            live.add_metric([queue], workers[queue])
            held.add_metric([queue], in_flight[queue])
        return [live, held]

    def _database(self) -> list[Metric]:
        letters = GaugeMetricFamily(
            "pipeline_dead_letters_pending", "Dead letters not replayed.", value=dead_letters_pending()
        )
        counts, oldest = review_backlog()
        backlog = GaugeMetricFamily(
            "pipeline_review_backlog", "Live reviews (open or claimed), by reason.", labels=["reason"]
        )
        for reason, n in sorted(counts.items()):
            backlog.add_metric([reason], n)
        age = GaugeMetricFamily("pipeline_review_oldest_age_seconds", "Age of the oldest live review.", value=oldest)
        return [letters, backlog, age]


STATE = PipelineStateCollector()


class ScrapeTarget:
    """What one scrape sees: every process's metrics on this host (or this process's), plus state."""

    def __init__(self, *, include_state: bool, path: str | None = None) -> None:
        self.path = path or multiproc_dir()
        self.include_state = include_state

    def collect(self) -> Iterator[Metric]:
        if self.path:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.path)
            yield from registry.collect()
        else:
            yield from REGISTRY.collect()
        if self.include_state:
            yield from STATE.collect()


def scrape_registry(*, include_state: bool, path: str | None = None) -> CollectorRegistry:
    """A registry to hand to prometheus-client's exposition (a view or an HTTP server)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScrapeTarget(include_state=include_state, path=path))  # type: ignore[arg-type]
    return registry


def render(*, include_state: bool = True, path: str | None = None) -> bytes:
    """The text exposition of one scrape."""
    return generate_latest(scrape_registry(include_state=include_state, path=path))


def metrics_view(request: HttpRequest) -> HttpResponse:
    """`/metrics` for the API: replaces django-prometheus's view, adding the state gauges."""
    return HttpResponse(render(include_state=True), content_type=CONTENT_TYPE_LATEST)


def start_exporter(port: int, addr: str = "0.0.0.0", *, include_state: bool = False) -> Any | None:
    """Serve this host's metrics over HTTP from a daemon thread; None when the port is taken."""
    from prometheus_client import start_http_server

    try:
        server, _thread = start_http_server(port, addr=addr, registry=scrape_registry(include_state=include_state))
    except OSError as exc:
        log.info("metrics port %s already served on this host (%s); not exporting from this process", port, exc)
        return None
    log.info("exporting worker metrics on %s:%s", addr, server.server_port)
    return server


@worker_ready.connect(dispatch_uid="project.metrics.worker_ready")
def _export_worker_metrics(**_: Any) -> None:
    port = os.environ.get("WORKER_METRICS_PORT")
    if port:
        start_exporter(int(port), os.environ.get("WORKER_METRICS_ADDR", "0.0.0.0"))


@worker_process_shutdown.connect(dispatch_uid="project.metrics.worker_process_shutdown")
def _forget_dead_process(pid: int | None = None, **_: Any) -> None:
    # Live gauges of a prefork child that is gone must stop counting; counters keep their totals.
    if multiproc_dir():
        multiprocess.mark_process_dead(pid or os.getpid())
