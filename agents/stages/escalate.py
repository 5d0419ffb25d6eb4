"""escalate: hand the ticket to a person with the agents' suggestion, and tell the customer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agents.stages.types import ESCALATION, StageContext, StageError, StageResult, TicketInput


def escalate(ticket: TicketInput, ctx: StageContext) -> StageResult:
    """Send the holding reply once, and describe what the reviewer should see."""
    if ctx.tools is None:
        raise StageError("no tool runner configured", permanent=True)
    escalation = ticket.context.get(ESCALATION, {})
    classified = ticket.context.get("classify", {})
    result = ctx.tools.run(
        "reply", {"text": ctx.holding_reply, "kind": "holding"}, idempotency_key=f"{ticket.id}:holding:reply"
    )
    if not result.ok:
        raise StageError(
            f"holding reply failed: {result.data.get('error', 'unknown error')}",
            permanent=bool(result.data.get("permanent")),
        )
    suggestion = review_suggestion(ticket.context, escalation.get("detail", ""))
    output = {
        "reason": escalation.get("reason", "low_confidence"),
        "suggestion": suggestion,
        "holding_reply": ctx.holding_reply,
    }
    return StageResult(output=output, confidence=classified.get("confidence"))


def review_suggestion(context: Mapping[str, Any], detail: str) -> dict[str, Any]:
    """What the agents would have done, for the person who decides: the earlier stages' outputs."""
    classified = context.get("classify", {})
    decided = context.get("decide", {})
    return {
        "intent": classified.get("intent", ""),
        "confidence": classified.get("confidence"),
        "tier": classified.get("tier", ""),
        "plan": decided.get("plan", []),
        "reply": decided.get("reply", ""),
        "detail": detail,
    }
