"""What a stage is lent: the stage-facing view of its ticket and a context holding only what its
spec asks for (tiers, tools, the customer's history, a hand-over to Claude), built per process."""

from __future__ import annotations

import functools
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from agents.intents.catalog import get_catalog
from agents.llm.scope import TicketScope
from agents.pipeline.spec import HANDOFF, HISTORY, TIERS, TOOLS, StageSpec
from agents.stages.types import CHEAP, CLAUDE, ClassifierTier, StageContext, TicketInput, cheap_output
from agents.tools import LedgerTools
from tickets.models import Client, Ticket


class _Parts:
    """The process's classifier tiers and Claude client, built on first use (a tier may hold a
    loaded model); `reset()` drops them, so the next use builds them from the current settings."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._tiers: list[ClassifierTier] | None = None
        self._llm: dict[str, Any] | None = None

    def tiers(self) -> list[ClassifierTier]:
        if self._tiers is None:
            self._tiers = [import_string(path)() for path in settings.CLASSIFIER_TIERS]
        return self._tiers

    def llm(self) -> dict[str, Any]:
        """The network-bound tier and model client; empty when no API key is configured."""
        if self._llm is None:
            self._llm = {}
            if settings.LLM_ENABLED:
                self._llm["tier"] = import_string(settings.LLM_TIER)()
                self._llm["client"] = getattr(self._llm["tier"], "client", None)
        return self._llm


parts = _Parts()


def warm() -> None:
    """Build this process's tiers and load what they hold — the compiled rules, the active model and
    its encoder — by classifying one text, then close its database connections. A prefork pool's
    processes are forked from the process that called this: every one, and every replacement
    (`--max-tasks-per-child`), starts warm and shares those pages, instead of spending its first
    seconds loading them while the other process carries the whole load."""
    from django.db import connections

    try:
        catalog = get_catalog()
        for tier in parts.tiers():
            tier.classify("warm up", catalog)
    finally:
        connections.close_all()  # a forked process must never share its parent's connection


def ticket_input(ticket: Ticket) -> TicketInput:
    """The stage-facing view of a ticket."""
    return TicketInput(
        id=str(ticket.id),
        client_id=ticket.client_id,
        customer_ref=ticket.customer_ref,
        channel=ticket.channel,
        subject=ticket.subject,
        body=ticket.body,
        priority=ticket.priority,
        metadata=ticket.metadata,
        context=ticket.context,
    )


def ticket_scope_of(ticket: Ticket, spec: StageSpec) -> TicketScope:
    """What the Claude tier may know of the ticket: its client, priority, attempt and the cheap
    tiers' guess (read by budgets, routing and batching)."""
    prior = ticket.context.get(cheap_output(spec.name)) or {}
    return TicketScope(
        ticket_id=str(ticket.pk),
        client_id=ticket.client_id,
        client_name=Client.objects.values_list("name", flat=True).get(pk=ticket.client_id),
        priority=ticket.priority,
        attempt=ticket.stage_attempts + 1,
        prior_intent=prior.get("intent") or "",
        prior_confidence=prior.get("confidence") if prior.get("intent") else None,
    )


def stage_context(
    spec: StageSpec, ticket: Ticket, attempt: int, variant: str = CHEAP, history: list[dict[str, Any]] | None = None
) -> StageContext:
    """Lend the stage only what its spec asks for; the Claude variant gets Claude instead of the tiers."""
    ctx = StageContext(
        catalog=get_catalog(), attempt=attempt, holding_reply=settings.PIPELINE["HOLDING_REPLY"], variant=variant
    )
    if variant == CLAUDE:
        from agents.llm.drafting import draft_reply  # only the Claude variant needs the SDK

        llm = parts.llm()
        ctx.tiers = [llm["tier"]] if TIERS in spec.lends and llm else []
        client = llm.get("client")
        ctx.draft = functools.partial(draft_reply, client) if client is not None else None
        ctx.scope = ticket_scope_of(ticket, spec)
    else:
        ctx.tiers = parts.tiers() if TIERS in spec.lends else []
        ctx.can_handoff = HANDOFF in spec.lends and settings.LLM_ENABLED
    if TOOLS in spec.lends:
        ctx.tools = LedgerTools(str(ticket.id))
    if HISTORY in spec.lends:
        ctx.history = history or []
    return ctx
