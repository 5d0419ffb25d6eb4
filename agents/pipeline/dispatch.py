"""Publishing the next hop: the task of the stage a ticket's persisted status says is due (or its
Claude variant, once the cheap one handed over), after the transaction that moved it commits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import current_app
from django.db import transaction

from agents.pipeline.spec import LLM_TASK, SPEC, handed_over, lane_of
from tickets.models import TERMINAL
from tickets.webhooks import callback_due


def stage_enqueue(
    ticket_id: Any,
    stage: str,
    *,
    context: Mapping[str, Any] | None = None,
    countdown: float | None = None,
    client_id: int | None = None,
) -> None:
    """Publish the stage's task (its queue from the spec; a new ticket's in its client's lane); its
    Claude variant when handed over."""
    if context is not None and handed_over(context, stage):
        current_app.send_task(LLM_TASK, args=[str(ticket_id), stage], countdown=countdown)
        return
    spec = SPEC.by_name[stage]
    queue = lane_of(spec.queue_name, client_id) if client_id is not None else None
    current_app.send_task(spec.task, args=[str(ticket_id)], countdown=countdown, queue=queue)


def after_commit(ticket_id: Any, new_status: str, context: Mapping[str, Any] | None = None) -> None:
    """Once the move to `new_status` commits: the callback for a settled ticket, else the next stage."""
    if new_status in TERMINAL:
        transaction.on_commit(callback_due)
    else:
        stage = SPEC.by_status[new_status].name
        transaction.on_commit(lambda: stage_enqueue(ticket_id, stage, context=context))
