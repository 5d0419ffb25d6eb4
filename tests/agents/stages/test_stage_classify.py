"""The classify stage with rules as evidence and a candidate set for Claude (pure: no database)."""

from __future__ import annotations

from collections.abc import Mapping

from agents.stages.classify import classify
from agents.stages.types import IntentPolicy, StageContext, TicketInput, TierAnswer

CATALOG = {
    name: IntentPolicy(name=name, threshold=0.9, reply_template="ok")
    for name in ("card_arrival", "card_delivery_estimate", "lost_or_stolen_card", "exchange_rate", "age_limit")
}


class Tier:
    def __init__(self, name: str, answer: TierAnswer | None):
        self.name, self.answer = name, answer
        self.seen: list[str] = []

    def classify(self, text: str, catalog: Mapping[str, IntentPolicy]) -> TierAnswer | None:
        self.seen = sorted(catalog)
        return self.answer


def ticket(**context: object) -> TicketInput:
    return TicketInput(
        id="t-1", client_id=1, customer_ref="", channel="api", subject="", body="x", priority=0, context=context
    )


def test_the_rules_are_not_asked_where_the_model_answers():
    rules = Tier("rules", TierAnswer("lost_or_stolen_card", 0.99, "rules"))
    alternatives = (("card_arrival", 0.6), ("card_delivery_estimate", 0.3))
    model = Tier("local", TierAnswer("card_arrival", 0.6, "local", alternatives=alternatives))

    result = classify(ticket(parse={"text": "x"}), StageContext(catalog=CATALOG, tiers=[rules, model]))

    assert result.output["intent"] == "card_arrival" and result.confidence == 0.6 and result.tier == "local"
    assert result.output["candidates"] == ["card_arrival", "card_delivery_estimate"]
    assert rules.seen == [] and [t["tier"] for t in result.output["tiers"]] == ["local"]


def test_the_rule_answers_when_no_model_does():
    rules = Tier("rules", TierAnswer("lost_or_stolen_card", 0.99, "rules"))
    no_model = Tier("local", None)

    result = classify(ticket(parse={"text": "x"}), StageContext(catalog=CATALOG, tiers=[rules, no_model]))

    assert result.output["intent"] == "lost_or_stolen_card" and result.tier == "rules"


def test_claude_reads_only_the_candidate_set_the_cheap_tiers_left():
    cheap = {
        "intent": "card_arrival",
        "confidence": 0.5,
        "tier": "local",
        "alternatives": [["card_arrival", 0.5], ["card_delivery_estimate", 0.3], ["exchange_rate", 0.1]],
        "candidates": ["card_arrival", "card_delivery_estimate", "exchange_rate"],
    }
    claude = Tier("claude", TierAnswer("card_delivery_estimate", 0.95, "claude"))

    result = classify(
        ticket(parse={"text": "x"}, classify_cheap=cheap),
        StageContext(catalog=CATALOG, tiers=[claude], variant="claude"),
    )

    assert claude.seen == ["card_arrival", "card_delivery_estimate", "exchange_rate"]
    assert result.output["intent"] == "card_delivery_estimate" and result.tier == "claude"


def test_claude_reads_the_whole_catalogue_when_there_is_no_candidate_set():
    claude = Tier("claude", TierAnswer("age_limit", 0.95, "claude"))

    classify(
        ticket(parse={"text": "x"}, classify_cheap={}), StageContext(catalog=CATALOG, tiers=[claude], variant="claude")
    )

    assert claude.seen == sorted(CATALOG)
