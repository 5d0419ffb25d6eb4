"""classify: intent and confidence, asking each tier in turn until one is sure enough."""

from __future__ import annotations

from agents.stages.types import StageContext, StageResult, TicketInput, TierAnswer


def classify(ticket: TicketInput, ctx: StageContext) -> StageResult:
    """Rules → local model → Claude: stop at the first answer above its intent's threshold."""
    text = ticket.context["parse"]["text"]
    best: TierAnswer | None = None
    tried: list[dict[str, object]] = []
    tokens_in = tokens_out = 0
    cost = 0.0
    for tier in ctx.tiers:
        answer = tier.classify(text, ctx.catalog)
        if answer is None or answer.intent not in ctx.catalog:
            tried.append({"tier": tier.name, "intent": None, "confidence": None})
            continue
        tried.append({"tier": answer.tier, "intent": answer.intent, "confidence": answer.confidence})
        tokens_in, tokens_out, cost = tokens_in + answer.input_tokens, tokens_out + answer.output_tokens, cost + answer.cost_usd
        if best is None or answer.confidence > best.confidence:
            best = answer
        if answer.confidence >= ctx.catalog[answer.intent].threshold:
            best = answer
            break
    output: dict[str, object] = {"tiers": tried}
    if best is None:
        output.update(intent="", confidence=0.0, tier="", model="", alternatives=[])
        return StageResult(output=output, confidence=0.0, input_tokens=tokens_in, output_tokens=tokens_out, cost_usd=cost)
    output.update(
        intent=best.intent,
        confidence=best.confidence,
        tier=best.tier,
        model=best.model,
        alternatives=[list(a) for a in best.alternatives],
    )
    return StageResult(
        output=output, confidence=best.confidence, tier=best.tier, model=best.model,
        input_tokens=tokens_in, output_tokens=tokens_out, cost_usd=cost, cache_hit=best.cache_hit,
    )
