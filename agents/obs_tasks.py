"""Observability tasks for beat, and the worker-side wiring of metrics and log context.

Imported by `agents/tasks.py`, so Celery's autodiscovery loads it in every worker: that import
also connects the worker's `worker_ready` exporter (`project/metrics.py`) and the task log
context (`project/logging.py`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import shared_task

import project.logging  # noqa: F401 - task_prerun/task_postrun bind the log context
import project.metrics  # noqa: F401 - worker_ready starts the host's metrics exporter
from agents import metrics, retention

metrics.connect()  # a worker started without the AppConfig line still counts its stages


@shared_task(name="agents.archive_traces")
def archive_traces(
    *, older_than_days: float | None = None, batch_size: int | None = None, time_budget: float | None = None
) -> dict[str, Any]:
    """Beat: archive traces older than the retention age to compressed JSONL, then delete them."""
    older_than = timedelta(days=older_than_days) if older_than_days is not None else None
    report = retention.traces_archive(older_than=older_than, batch_size=batch_size, time_budget=time_budget)
    return report.as_dict()
