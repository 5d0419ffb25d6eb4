"""decide: the intent's policy and the request's context → an action plan, or "needs a human"."""

from __future__ import annotations

import re
from typing import Any

from agents.stages.types import IntentPolicy, StageContext, StageResult, TicketInput

_PLACEHOLDER = re.compile(r"\{(customer_ref|ticket_ref)\}")
SUPPORTED_LANGUAGES = frozenset({"en", "und"})


def render_reply(template: str, ticket: TicketInput) -> str:
    """Fill the two placeholders a template may use; nothing else in it is interpreted."""
    values = {"customer_ref": ticket.customer_ref or "there", "ticket_ref": ticket.id.split("-")[0]}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template).strip()


def build_plan(policy: IntentPolicy, reply: str) -> list[dict[str, Any]]:
    """The actions for an intent: a reply, and the downstream call where the policy has one."""
    plan: list[dict[str, Any]] = []
    if "reply" in policy.allowed_actions and reply:
        plan.append({"tool": "reply", "args": {"text": reply}})
    if "webhook" in policy.allowed_actions and policy.webhook_url:
        plan.append({"tool": "webhook", "args": {"intent": policy.name}})
    return plan


def _needs_human(ticket: TicketInput, policy: IntentPolicy | None, confidence: float) -> tuple[str, str] | None:
    parsed = ticket.context.get("parse", {})
    if parsed.get("wants_human"):
        return "customer_asked", "the customer asked for a person"
    if policy is None:
        return "low_confidence", "no tier recognised the intent"
    if policy.always_review:
        return "policy", f"intent {policy.name} is always reviewed"
    if confidence < policy.threshold:
        return "low_confidence", f"confidence {confidence:.3f} below threshold {policy.threshold:.3f}"
    if parsed.get("language", "und") not in SUPPORTED_LANGUAGES:
        return "low_confidence", f"language {parsed.get('language')} has no automated replies"
    return None


def decide(ticket: TicketInput, ctx: StageContext) -> StageResult:
    """Apply the intent's policy; a plan only ever holds actions on the intent's allow-list."""
    classified = ticket.context.get("classify", {})
    intent = classified.get("intent") or ""
    confidence = float(classified.get("confidence") or 0.0)
    policy = ctx.catalog.get(intent)
    reply = render_reply(policy.reply_template, ticket) if policy else ""
    plan = build_plan(policy, reply) if policy else []
    output: dict[str, Any] = {"intent": intent, "plan": plan, "reply": reply, "needs_human": None}
    verdict = _needs_human(ticket, policy, confidence)
    if verdict is None and not plan:
        verdict = ("policy", f"intent {intent} allows no automated action")
    if verdict is not None:
        output["needs_human"] = {"reason": verdict[0], "detail": verdict[1]}
        return StageResult(output=output, confidence=confidence, escalate=verdict[0])
    return StageResult(output=output, confidence=confidence)
