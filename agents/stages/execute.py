"""execute: run the plan's tools, each once per idempotency key, only from the allow-list."""

from __future__ import annotations

from typing import Any

from agents.stages.decide import build_plan
from agents.stages.types import HUMAN, StageContext, StageError, StageResult, TicketInput


def _plan_and_intent(ticket: TicketInput, ctx: StageContext) -> tuple[str, list[dict[str, Any]], str]:
    human = ticket.context.get(HUMAN)
    if human:  # a reviewer's decision replaces the agents' plan
        policy = ctx.catalog.get(human["intent"])
        if policy is None:
            raise StageError(f"reviewer chose unknown intent {human['intent']!r}", permanent=True)
        return human["intent"], build_plan(policy, human.get("reply", "")), "human"
    decided = ticket.context["decide"]
    return decided["intent"], decided["plan"], "agents"


def execute(ticket: TicketInput, ctx: StageContext) -> StageResult:
    """Run each action of the plan through the ledger-backed tools."""
    if ctx.tools is None:
        raise StageError("no tool runner configured", permanent=True)
    intent, plan, source = _plan_and_intent(ticket, ctx)
    policy = ctx.catalog[intent]
    # The allow-list is the policy's, checked here again: nothing a customer wrote reaches it.
    refused = [a["tool"] for a in plan if a["tool"] not in policy.allowed_actions]
    if refused:
        raise StageError(f"actions {refused} not allowed for intent {intent}", permanent=True)
    results, reply = [], ""
    for index, action in enumerate(plan):
        args = dict(action["args"])
        if action["tool"] == "webhook":
            args.update(url=policy.webhook_url, ticket_id=ticket.id, customer_ref=ticket.customer_ref)
        result = ctx.tools.run(action["tool"], args, idempotency_key=f"{ticket.id}:final:{index}:{action['tool']}")
        if not result.ok:
            raise StageError(
                f"{action['tool']} failed: {result.data.get('error', 'unknown error')}",
                permanent=bool(result.data.get("permanent")),  # a downstream 4xx will not get better
            )
        if action["tool"] == "reply":
            reply = args["text"]
        results.append({"tool": result.tool, "ok": result.ok, "replayed": result.replayed, "data": dict(result.data)})
    action_name = "+".join(a["tool"] for a in plan) or "none"
    output = {"intent": intent, "source": source, "action": action_name, "reply": reply, "results": results}
    return StageResult(output=output, confidence=1.0)
