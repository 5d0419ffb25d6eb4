"""Which model class answers: the small one, unless a rule in settings asks for the large one."""

from __future__ import annotations

from agents.llm.config import llm_settings


def route(
    *, risk: str = "", length: int = 0, prior_confidence: float | None = None, downgrade: bool = False
) -> tuple[str, str]:
    """`(model_class, why)` from the intent's risk, the request's length and the cheap tiers' confidence."""
    rules = llm_settings()["ROUTING"]
    if downgrade:
        return rules["default"], "over budget"
    if risk and risk in rules["large_for_risk"]:
        return rules["large"], f"risk {risk}"
    if rules["large_over_chars"] and length > rules["large_over_chars"]:
        return rules["large"], f"{length} chars"
    floor = rules["large_below_prior_confidence"] or 0.0
    if prior_confidence is not None and prior_confidence < floor:
        return rules["large"], f"prior confidence {prior_confidence:.2f}"
    return rules["default"], "default"
