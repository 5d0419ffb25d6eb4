"""Publishing the next hop: the task of the stage a ticket's persisted status says is due (or its
Claude variant, once the cheap one handed over), after the transaction that moved it commits. A
cheap stage published for a known tenant (a new ticket, a replay, a sweep) goes to the tenant's lane
of the first queue (agents/pipeline/tenants.py), so the cheap worker serves tenants in turn."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import current_app
from django.db import transaction

from agents.pipeline import tenants
from agents.pipeline.spec import CHEAP, LLM_TASK, SPEC, handed_over, lane_name
from tickets.models import TERMINAL, Ticket
from tickets.webhooks import callback_due


def stage_enqueue(
    ticket_id: Any,
    stage: str,
    *,
    context: Mapping[str, Any] | None = None,
    countdown: float | None = None,
    client_id: int | None = None,
    keep_tenant: bool = False,
) -> None:
    """Publish the stage's task: a cheap stage for a known tenant (`client_id`, or `keep_tenant`: the
    ticket's own, looked up) in the tenant's lane, any other on its queue from the spec; its Claude
    variant when handed over."""
    if context is not None and handed_over(context, stage):
        current_app.send_task(LLM_TASK, args=[str(ticket_id), stage], countdown=countdown)
        return
    spec = SPEC.by_name[stage]
    queue = None
    if spec.role == CHEAP and (client_id is not None or keep_tenant):
        if client_id is None:
            client_id = Ticket.objects.values_list("client_id", flat=True).get(pk=ticket_id)
        queue = lane_name(SPEC.first.queue_name, tenants.lane(client_id))
    current_app.send_task(spec.task, args=[str(ticket_id)], countdown=countdown, queue=queue)


def after_commit(
    ticket_id: Any,
    new_status: str,
    context: Mapping[str, Any] | None = None,
    *,
    client_id: int | None = None,
    leaves_flight: bool = True,
) -> None:
    """Once the move to `new_status` commits: the callback for a settled ticket (and one ticket less
    in flight for its tenant, unless it was settled already: `leaves_flight`), else the next stage."""
    if new_status in TERMINAL:
        transaction.on_commit(callback_due)
        if leaves_flight:
            transaction.on_commit(lambda: _left(ticket_id, client_id), robust=True)
    else:
        stage = SPEC.by_status[new_status].name
        transaction.on_commit(lambda: stage_enqueue(ticket_id, stage, context=context))


def _left(ticket_id: Any, client_id: int | None) -> None:
    if client_id is None:
        client_id = Ticket.objects.values_list("client_id", flat=True).get(pk=ticket_id)
    tenants.leave(client_id)
