"""classify: intent and confidence, asking each tier in turn until one is sure enough."""

from __future__ import annotations

from agents.stages.types import StageContext, StageResult, TicketInput, TierAnswer


def classify(ticket: TicketInput, ctx: StageContext) -> StageResult:
    """Rules → local model → Claude: stop at the first answer above its intent's threshold."""
    text = ticket.context["parse"]["text"]
    earlier = ticket.context.get("classify_cpu") if ctx.variant == "llm" else None
    best: TierAnswer | None = _answer_from(earlier)
    tried: list[dict[str, object]] = list(earlier.get("tiers", [])) if earlier else []
    tokens_in = tokens_out = 0
    cost = 0.0
    for tier in ctx.tiers:
        answer = tier.classify(text, ctx.catalog)
        if answer is None or answer.intent not in ctx.catalog:
            tried.append({"tier": tier.name, "intent": None, "confidence": None})
            continue
        tried.append({"tier": answer.tier, "intent": answer.intent, "confidence": answer.confidence})
        tokens_in, tokens_out, cost = (
            tokens_in + answer.input_tokens,
            tokens_out + answer.output_tokens,
            cost + answer.cost_usd,
        )
        if best is None or answer.confidence > best.confidence:
            best = answer
        if answer.confidence >= ctx.catalog[answer.intent].threshold:
            best = answer
            break
    output: dict[str, object] = {"tiers": tried}
    if best is None:
        output.update(intent="", confidence=0.0, tier="", model="", alternatives=[])
        handoff = "llm" if ctx.can_handoff else None
        return StageResult(
            output=output,
            confidence=0.0,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cost_usd=cost,
            handoff=handoff,
        )
    handoff = None
    if ctx.can_handoff and best.confidence < ctx.catalog[best.intent].threshold:
        handoff = "llm"  # unsure: ask the network-bound tier, on its own queue
    output.update(
        intent=best.intent,
        confidence=best.confidence,
        tier=best.tier,
        model=best.model,
        alternatives=[list(a) for a in best.alternatives],
    )
    return StageResult(
        output=output,
        confidence=best.confidence,
        tier=best.tier,
        model=best.model,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cost_usd=cost,
        cache_hit=best.cache_hit,
        handoff=handoff,
    )


def _answer_from(output: dict | None) -> TierAnswer | None:
    """The cheaper tiers' best guess, persisted before the hand-over."""
    if not output or not output.get("intent"):
        return None
    alternatives = tuple((str(i), float(p)) for i, p in output.get("alternatives", []))
    return TierAnswer(
        output["intent"], float(output["confidence"]), output["tier"], output.get("model", ""), alternatives
    )
