"""Beat tasks for the Message Batches API (import this module from `agents/tasks.py`)."""

from __future__ import annotations

from celery import shared_task

from agents.llm import batches
from agents.llm.base import ModelClient


def _client() -> ModelClient | None:
    from agents.pipeline.context import parts  # the per-process client the tier uses

    return parts.llm().get("client")


@shared_task(name="agents.llm_batch_submit")
def llm_batch_submit(force: bool = False) -> str:
    """Beat (and a full pending list): send the waiting low-priority requests as one batch."""
    client = _client()
    if client is None:
        return "llm disabled"
    return batches.batch_submit(client, force=force) or "nothing to submit"


@shared_task(name="agents.llm_batch_poll")
def llm_batch_poll() -> int:
    """Beat: collect ended batches and wake their tickets."""
    client = _client()
    return batches.batch_poll(client) if client is not None else 0
