"""Drafting a reply with Claude for decide: from the intent, the request and the customer's history.

Replies are never cached (they may carry the customer's data). The history given is the
customer's last N interactions (`DRAFT.history_size`, 5–10), one compact line each: never the
whole transcript.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.llm.base import ModelClient, ModelRequest, ModelUnavailable, Usage
from agents.llm.config import llm_settings, model_id
from agents.llm.pricing import cost_usd
from agents.llm.prompts import (
    DRAFT_INSTRUCTIONS,
    DRAFT_SCHEMA,
    checked_json,
    draft_user_message,
    history_lines,
    unit_interval,
)
from agents.llm.routing import route
from agents.llm.scope import TicketScope, current_scope
from agents.llm.spend import HUMAN, OK, budget_verdict, spend_record
from agents.stages.types import IntentPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Draft:
    """A drafted reply, or why there is none (`reply` None: hand the ticket to a person)."""

    reply: str | None
    confidence: float = 0.0
    model: str = ""
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    problem: str = ""

    @property
    def input_tokens(self) -> int:
        return self.usage.total_input

    @property
    def output_tokens(self) -> int:
        return self.usage.output_tokens


def draft_request(
    *, policy: IntentPolicy, text: str, history: Sequence[Mapping[str, Any]], model_class: str
) -> ModelRequest:
    """The drafting request (pure: no I/O)."""
    cfg = llm_settings()["DRAFT"]
    lines = history_lines(history, int(cfg["history_size"]))
    return ModelRequest(
        model_class=model_class,
        model=model_id(model_class),
        system=DRAFT_INSTRUCTIONS,
        cache_system=True,
        messages=[{"role": "user", "content": draft_user_message(policy=policy, text=text, history_text=lines)}],
        json_schema=DRAFT_SCHEMA,
        max_tokens=int(cfg["max_tokens"]),
        expected_output_tokens=int(cfg["expected_output_tokens"]),
    )


def draft_reply(
    client: ModelClient,
    *,
    policy: IntentPolicy,
    text: str,
    history: Sequence[Mapping[str, Any]] = (),
    client_id: int | None = None,
    client_name: str = "",
) -> Draft:
    """Draft the reply to `text` for `policy`'s intent.

    Transient failures raise `ModelError` (a `StageError`: the pipeline retries the stage). An
    unusable answer, an unavailable Claude or a client over budget give `Draft(reply=None, ...)`.
    """
    scope = TicketScope(client_id=client_id, client_name=client_name) if client_id is not None else current_scope()
    verdict = budget_verdict(scope)
    if verdict == HUMAN:
        return Draft(None, problem="over budget")
    if not client.available():
        return Draft(None, problem="Claude unavailable")
    model_class, _ = route(risk=policy.risk, length=len(text), downgrade=verdict != OK)
    request = draft_request(policy=policy, text=text, history=history, model_class=model_class)
    try:
        reply = client.complete(request)
    except ModelUnavailable as exc:
        return Draft(None, problem=f"Claude unavailable: {exc}")
    cost = cost_usd(model_class, reply.usage)
    spend_record(client_id=scope.client_id, model_class=model_class, usage=reply.usage, cost=cost)
    made = {"model": request.model, "usage": reply.usage, "cost_usd": cost}
    checked = checked_json(reply)
    text_out = checked.data.get("reply")
    confidence = unit_interval(checked.data.get("confidence"))
    problem = checked.problem or (
        "empty reply"
        if not isinstance(text_out, str) or not text_out.strip()
        else "confidence out of range"
        if confidence is None
        else ""
    )
    if problem:
        log.info("unusable draft from %s: %s", request.model, problem)
        return Draft(None, problem=problem, **made)
    return Draft(text_out.strip(), confidence=confidence, **made)
