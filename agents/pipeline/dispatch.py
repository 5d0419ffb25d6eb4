"""Publishing the next hop: the task of the stage a ticket's persisted status says is due (or its
Claude variant, once the cheap one handed over), after the transaction that moved it commits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import current_app
from django.db import transaction

from agents.callbacks import callback_due
from agents.pipeline.spec import LLM_TASK, SPEC, handed_over
from tickets.models import TERMINAL


def stage_enqueue(
    ticket_id: Any, stage: str, *, context: Mapping[str, Any] | None = None, countdown: float | None = None
) -> None:
    """Publish the stage's task (its queue from the spec); its Claude variant when handed over."""
    if context is not None and handed_over(context, stage):
        current_app.send_task(LLM_TASK, args=[str(ticket_id), stage], countdown=countdown)
    else:
        current_app.send_task(SPEC.by_name[stage].task, args=[str(ticket_id)], countdown=countdown)


def after_commit(ticket_id: Any, new_status: str, context: Mapping[str, Any] | None = None) -> None:
    """Once the move to `new_status` commits: the callback for a settled ticket, else the next stage."""
    if new_status in TERMINAL:
        transaction.on_commit(callback_due)
    else:
        stage = SPEC.by_status[new_status].name
        transaction.on_commit(lambda: stage_enqueue(ticket_id, stage, context=context))
