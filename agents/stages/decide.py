"""decide: the intent's policy and the request's context → an action plan, or "needs a human"."""

from __future__ import annotations

import re
from typing import Any

from agents.stages.types import CHEAP, CLAUDE, IntentPolicy, StageContext, StageResult, TicketInput

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
    if policy.risk == "high" and ticket.context.get("classify", {}).get("tier") == "claude":
        # What a customer writes can steer a language model: a high-risk action chosen by one waits
        # for a person, even when it is on the intent's allow-list.
        return "policy", f"high-risk intent {policy.name} chosen by the language-model tier"
    if confidence < policy.threshold:
        return "low_confidence", f"confidence {confidence:.3f} below threshold {policy.threshold:.3f}"
    if parsed.get("language", "und") not in SUPPORTED_LANGUAGES:
        return "low_confidence", f"language {parsed.get('language')} has no automated replies"
    return None


def needs_draft(policy: IntentPolicy | None) -> bool:
    """An intent that may reply but has no canned answer: Claude drafts one (on the llm queue)."""
    return policy is not None and "reply" in policy.allowed_actions and not policy.reply_template.strip()


def _drafted(ticket: TicketInput, ctx: StageContext, policy: IntentPolicy) -> tuple[str, dict[str, Any]]:
    draft = ctx.draft(
        policy=policy, text=ticket.context["parse"]["text"], history=ctx.history, client_id=ticket.client_id
    )
    usage = {
        "tier": "claude",
        "model": draft.model,
        "input_tokens": draft.input_tokens,
        "output_tokens": draft.output_tokens,
        "cost_usd": draft.cost_usd,
    }
    return draft.reply or "", {**usage, "problem": draft.problem}


def decide(ticket: TicketInput, ctx: StageContext) -> StageResult:
    """Apply the intent's policy; a plan only ever holds actions on the intent's allow-list."""
    classified = ticket.context.get("classify", {})
    intent = classified.get("intent") or ""
    confidence = float(classified.get("confidence") or 0.0)
    policy = ctx.catalog.get(intent)
    verdict = _needs_human(ticket, policy, confidence)
    drafting = verdict is None and needs_draft(policy)
    if drafting and ctx.variant == CHEAP and ctx.can_handoff:
        return StageResult(output={"intent": intent, "drafting": True}, confidence=confidence, handoff=CLAUDE)
    usage: dict[str, Any] = {}
    if drafting and ctx.variant == CLAUDE and ctx.draft is not None:
        reply, usage = _drafted(ticket, ctx, policy)  # type: ignore[arg-type]
    else:
        reply = render_reply(policy.reply_template, ticket) if policy else ""
    plan = build_plan(policy, reply) if policy else []
    output: dict[str, Any] = {"intent": intent, "plan": plan, "reply": reply, "needs_human": None}
    if usage.get("problem"):
        verdict = ("low_confidence", f"no usable drafted reply: {usage['problem']}")
    if verdict is None and not plan:
        verdict = ("policy", f"intent {intent} allows no automated action")
    accounting = {k: usage[k] for k in ("tier", "model", "input_tokens", "output_tokens", "cost_usd") if k in usage}
    if verdict is not None:
        output["needs_human"] = {"reason": verdict[0], "detail": verdict[1]}
        return StageResult(output=output, confidence=confidence, escalate=verdict[0], **accounting)
    return StageResult(output=output, confidence=confidence, **accounting)
